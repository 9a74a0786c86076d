"""Ray's own log lines: in the run's log.txt, on the console only when verbose."""

import logging
import sys

import pytest

from fedray.server.storage import Location
from fedray.session import RayLogs


@pytest.mark.parametrize("verbose", [False, True])
def test_ray_log_lines_go_to_log_txt_and_to_the_console_only_when_verbose(tmp_path, capsys, monkeypatch, verbose):
    # Ray's console handler keeps the stderr it found when ray was first imported
    # (another test's capture, in a full session): point it at this test's.
    for handler in logging.getLogger("ray").handlers:
        if isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith("ray"):
            monkeypatch.setattr(handler, "stream", sys.stderr)  # not setStream: it flushes the old one
    with RayLogs(verbose) as logs:
        logging.getLogger("ray._private.worker").info("Started a local Ray instance.")
        assert not (tmp_path / "log.txt").exists()  # held until the run directory exists
        logs.attach(Location.parse(str(tmp_path)))
        logging.getLogger("ray").warning("Token authentication is enabled")
        logs._worker_lines({"pid": 7, "actor_name": "ClientActor", "lines": ["a warning from a worker"]})
        logs._worker_lines({"pid": "autoscaler", "lines": ["Resources", "1.0/2.0 CPU"]})  # status, not events
    log = (tmp_path / "log.txt").read_text()
    assert "Started a local Ray instance." in log and "Token authentication is enabled" in log
    assert "(ClientActor pid=7) a warning from a worker" in log and "CPU" not in log
    console = capsys.readouterr().err
    assert ("Token authentication is enabled" in console) is verbose
    # once the run is over, Ray's own console handlers are back as they were
    logging.getLogger("ray").warning("after the run")
    assert "after the run" in capsys.readouterr().err
