"""SIGTERM turned into an interrupt, and remembered for the run loop when a frame on the
main thread swallows the exception the handler raised."""

import os
import signal

import pytest

from fedray.signals import Terminated, sigterm_as_interrupt, sigterm_received


def spin():
    """Bytecodes for Python to run a pending handler between."""
    for _ in range(10**5):
        pass


def test_sigterm_raises_terminated_and_the_handler_before_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_as_interrupt() as received:
            os.kill(os.getpid(), signal.SIGTERM)
            spin()
    assert received == [signal.SIGTERM] and sigterm_received()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_swallowed_terminated_stays_on_record_and_a_second_sigterm_is_ignored():
    with sigterm_as_interrupt() as received:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            spin()
        except BaseException:  # noqa: BLE001 - what a library frame on the main thread might do
            pass
        assert received == [signal.SIGTERM]  # what the run loop checks between rounds
        os.kill(os.getpid(), signal.SIGTERM)  # the cleanup the first one started must finish
        spin()
    assert received == [signal.SIGTERM]
