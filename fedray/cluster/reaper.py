"""The reaper: ends a run's own local Ray when its driver is killed (SIGKILL, OOM killer).

A driver that exits normally shuts its Ray down. One killed outright cannot, and
Ray 2.60 then leaves part of its node running for minutes: the raylet's
`ray::DashboardAgent` and `ray::RuntimeEnvAgent` (re-parented to init), sometimes
idle workers. Their command lines are rewritten (`ray::DashboardAgent`), so after
the fact nothing names the session they belonged to. The reaper is a small process
started beside a Ray the driver started itself: while the driver lives it notes the
driver's Ray descendants (pid and start time, so a reused pid is never touched);
once the driver is gone it kills those still running, with their own children.
Processes of any other Ray on the host are never descendants of this driver.

Run as `python -m fedray.cluster.reaper DRIVER_PID`; `start_reaper` does that.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
"""How often the reaper looks at the driver's process tree."""


def start_reaper() -> subprocess.Popen:
    """A reaper watching this process, in its own session (a Ctrl-C at the terminal
    must not stop it before the driver it watches)."""
    return subprocess.Popen([sys.executable, "-m", "fedray.cluster.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def stop_reaper(reaper: subprocess.Popen) -> None:
    """End a reaper once its driver has shut its Ray down itself."""
    reaper.terminate()
    reaper.wait()


def _is_ray(process) -> bool:
    """Ray's daemons, agents and workers: `ray::...` titles or paths inside the ray package."""
    import psutil

    try:
        text = " ".join(process.cmdline()[:2]) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return text.startswith("ray::") or f"{os.sep}ray{os.sep}" in text


def ray_descendants(pid: int) -> dict[int, float]:
    """pid -> start time of the Ray processes below `pid` (empty once it is gone)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for child in children:
        if child.pid != os.getpid() and _is_ray(child):
            try:
                out[child.pid] = child.create_time()
            except psutil.NoSuchProcess:
                pass
    return out


def kill_all(known: dict[int, float]) -> int:
    """SIGKILL every process in `known` that is still the same process, and its children
    (a worker the raylet started after the last look). Returns how many were signalled."""
    import psutil

    targets = []
    for pid, created in known.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() != created:
                continue  # the pid was reused by someone else's process
            targets += [process, *process.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    for process in targets:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return len(targets)


def watch(driver_pid: int) -> None:
    """Follow `driver_pid`'s Ray descendants until it is gone, then kill them."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
        born = driver.create_time()
    except psutil.NoSuchProcess:
        return
    known: dict[int, float] = {}
    while True:
        try:
            alive = driver.is_running() and driver.create_time() == born and driver.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        if not alive:
            break
        known.update(ray_descendants(driver_pid))
        time.sleep(POLL_S)
    kill_all(known)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch(int(sys.argv[1]))
