"""SIGTERM handled like Ctrl-C, so a run stopped by a scheduler keeps what it computed.

Kubernetes, `ray job stop`, Slurm and most process managers stop a program with
SIGTERM. The driver turns it into `Terminated`, a KeyboardInterrupt, so the one
interrupt path runs: the current round finishes, the summary is written,
checkpoints stay, and `fedray` exits with 143 (128 + SIGTERM).

`ray.init` installs its own SIGTERM handler (`sys.exit`), so the driver installs
this one again once Ray is up.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM."""


_RECEIVED: list[int] = []
"""Signals this process received while a handler here was installed. Ray's `ray.get`
turns an exception raised by a signal handler during its wait into a plain
KeyboardInterrupt, so the type alone cannot tell SIGTERM from Ctrl-C."""


def forget_signals() -> None:
    """Start a command with no signal remembered (a process may run several)."""
    _RECEIVED.clear()


def sigterm_received() -> bool:
    """Whether SIGTERM arrived while `sigterm_as_interrupt` was active (this process)."""
    return signal.SIGTERM in _RECEIVED


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """While inside, the first SIGTERM raises `Terminated`; later ones are ignored, so the
    cleanup the first one started (finishing the round, writing the summary) completes.
    Python runs signal handlers only in the main thread; elsewhere this does nothing.

    Yields the signals received inside, for code that must not miss one: the exception
    is raised wherever the main thread happens to be, and a library frame that swallows
    BaseException would lose it (seen once in a clean-clone suite run: a SIGTERM sent as
    the actors started was never raised, and the run went on to its last round). The run
    loop checks this list between rounds."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if not received:
            received.append(signum)
            _RECEIVED.append(signum)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
