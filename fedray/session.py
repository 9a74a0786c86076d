"""The Ray instance a run uses: started in the background while the driver builds the
data, joined when it is already up, and Ray's own log lines kept out of the console.

A fresh local Ray costs seconds (its daemons, then a worker process per actor, each
importing torch). Three things hide most of that:

- `RayStart` calls `ray.init` on a thread as soon as the config is loaded, so Ray's
  daemons come up while the driver reads and partitions the data;
- a Ray this process starts gets Ray's `preload_python_modules` setting: every
  worker imports fedray's client code (torch included) as it starts, so the idle
  workers Ray starts with the node do that while the driver is still preparing, and
  the first actors created on them skip it;
- `ray.address: auto` joins a Ray started once with `ray start --head` and pays no
  start at all (docs/guides/startup-and-scale.md: the fast development loop).

`RayLogs` sends what Ray itself prints (its INFO and WARNING lines, the workers'
output) to the run's log.txt, and to the console only with `--verbose`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Iterator

from fedray.config.schema import RunConfig
from fedray.cluster.reaper import start_reaper, stop_reaper

PRELOAD = ("fedray.client.preload",)
"""Modules every worker of a Ray started here imports when it starts: the client code,
and what its imports made set aside from garbage collection (`fedray.client.preload`)."""


def init_options(cfg: RunConfig) -> dict:
    """`ray.init`'s arguments for a run: join `ray.address` (or the job's cluster under
    `ray job submit`), else start a private local instance sized by `ray.num_cpus`."""
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS") or "local"
    options: dict = {"address": address, "include_dashboard": False, "log_to_driver": True}
    if address == "local":
        options.update(num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus,
                       _system_config={"preload_python_modules": list(PRELOAD)})
    return options


class RayStart:
    """`ray.init` on a background thread, begun at construction (nothing if Ray is
    already initialised in this process: then the caller owns it).

    The thread lives until `stop` has shut Ray down: Ray starts its daemons with a
    parent-death signal, and on Linux the parent is the thread that started them, so
    they would be killed the moment it ended.
    """

    def __init__(self, cfg: RunConfig):
        import ray

        self.began = time.perf_counter()
        self.address = init_options(cfg)["address"]
        local = self.address == "local"
        self.timeout_s = cfg.ray.start_timeout_s if local else cfg.ray.connect_timeout_s
        self._key = "ray.start_timeout_s" if local else "ray.connect_timeout_s"
        self.seconds = 0.0
        """How long `ray.init` took (0 when joining one already initialised here)."""
        self.owned = not ray.is_initialized()
        """Started here, so stopped here at the end of the run."""
        self._error: BaseException | None = None
        self._thread = None
        self._reaper = None
        self._ready, self._release = threading.Event(), threading.Event()
        self._ready.set()
        if self.owned:
            self._ready.clear()
            self._thread = threading.Thread(target=self._init, args=(init_options(cfg),),
                                            name="fedray-ray-start", daemon=True)
            self._thread.start()

    def _init(self, options: dict) -> None:
        import ray

        try:
            ray.init(**options)
            if options["address"] == "local":  # its own node: ended with the driver, however it ends
                self._reaper = start_reaper()
        except ConnectionError as err:  # an address that is not (or no longer) a Ray cluster
            self._error = _unreachable(options["address"], err)
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception when its node does not start
            self._error = _not_started(options["address"], err)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self._error = err
        finally:
            self.seconds = time.perf_counter() - self.began
            self._ready.set()
        self._release.wait()

    def wait(self) -> float:
        """Block until Ray is up, at most `ray.start_timeout_s` (local) or
        `ray.connect_timeout_s` (an address) from the start; the seconds it took. Raises
        what `ray.init` raised, or a ClusterError naming the address and the key when it did
        not finish in time (`ray.init` waits for an address that never answers for minutes)."""
        from fedray.cluster.errors import ClusterError

        left = self.timeout_s - (time.perf_counter() - self.began)
        if not self._ready.wait(max(0.0, left)):
            where = "a local Ray did not start" if self.address == "local" else "no Ray answered there"
            raise ClusterError(f"ray.address={self.address}: {where} within {self._key}="
                               f"{self.timeout_s:g} s (is the address right, and the cluster up?)")
        if self._error is not None:
            raise self._error
        return self.seconds

    def stop(self) -> None:
        """Shut down a Ray started here (once it has finished starting), then end the thread."""
        import ray

        if self._thread is None:
            return
        if not self._ready.wait(max(0.0, self.timeout_s - (time.perf_counter() - self.began))):
            return  # still in `ray.init` past its bound: the daemon thread ends with the process
        if ray.is_initialized():
            ray.shutdown()
        if self._reaper is not None:
            stop_reaper(self._reaper)
            self._reaper = None
        self._release.set()
        self._thread.join()


def _not_started(address: str, err: Exception) -> Exception:
    """A ClusterError (exit status 2) for a Ray that failed to start or be joined: Ray's
    own reason, and where its logs are."""
    from fedray.cluster.errors import ClusterError

    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return ClusterError(f"ray.address={address}: Ray did not start: {reason} (Ray's logs: "
                        "/tmp/ray/session_latest/logs)")


def _unreachable(address: str, err: ConnectionError) -> Exception:
    """A ClusterError (one paragraph, exit status 2) for a Ray that cannot be joined."""
    from fedray.cluster.errors import ClusterError

    text = f"{err} {err.__cause__ or ''}"
    reason = str(err).strip().splitlines()[0]
    if "InvalidAuthToken" in text or "Authentication" in text:
        reason += ("; the cluster uses token authentication: with an explicit address Ray sends the token "
                   "(~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) only if RAY_AUTH_MODE=token "
                   "is set (ray.address: auto finds it by itself)")
    return ClusterError(f"ray.address={address}: {reason}")


@contextlib.contextmanager
def ray_session(cfg: RunConfig, start: RayStart | None = None) -> Iterator[RayStart]:
    """Ray for the body: the one `start` is bringing up, the one already initialised in
    this process, or a new one; shut down at the end if it was started for this."""
    start = start if start is not None else RayStart(cfg)
    try:
        start.wait()
        yield start
    finally:
        start.stop()


class RayLogs:
    """Ray's log lines (its Python loggers, and with `log_to_driver` the workers' output)
    into the run's log.txt instead of the console; kept in memory until the run
    directory exists. With `verbose` they reach the console as well."""

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self._lines: list[str] = []
        self._run_dir = None
        self._lock = threading.Lock()
        self._handler = _Forward(self.add)
        self._muted: list[tuple[logging.Handler, int]] = []
        self._printer: list = []
        """Ray's own console printer of worker output, while it is replaced."""

    def __enter__(self) -> "RayLogs":
        import ray  # noqa: F401  (importing it installs the handlers muted here)

        ray_logger = logging.getLogger("ray")
        ray_logger.addHandler(self._handler)
        if not self.verbose:
            self._muted = [(h, h.level) for h in ray_logger.handlers if h is not self._handler]
            for handler, _ in self._muted:
                handler.setLevel(logging.CRITICAL + 1)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("ray").removeHandler(self._handler)
        for handler, level in self._muted:
            handler.setLevel(level)
        self._route_worker_output(on=False)
        self.flush()

    def attach(self, run_dir) -> None:
        """From now on lines go to `run_dir`'s log.txt (with those held so far); and, Ray
        being up now, the workers' output too."""
        with self._lock:
            self._run_dir = run_dir
        self._route_worker_output(on=True)
        self.flush()

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line.rstrip("\n"))
            local = self._run_dir is not None and self._run_dir.is_local
        if local:  # appends are atomic on a filesystem; an object store rewrites, so it waits
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._run_dir is None or not self._lines:
                return
            text, self._lines = "\n".join(self._lines) + "\n", []
            where = self._run_dir / "log.txt"
        try:
            where.append_text(text)
        except OSError:
            pass  # the run's own writes report a broken output_dir

    def _route_worker_output(self, on: bool) -> None:
        """Workers' stdout/stderr lines (Ray prints them on the driver's console with
        `log_to_driver`): into log.txt, and on the console only when verbose."""
        try:
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # a Ray without this hook prints them itself, as it always has
            return
        dispatcher.remove_handler("fedray_log")
        if on:
            if not self.verbose:
                self._printer = [pair for pair in dispatcher.handlers if pair[0] == "ray_print_logs"]
                dispatcher.remove_handler("ray_print_logs")
            dispatcher.add_handler("fedray_log", self._worker_lines)
        else:
            for name, handler in self._printer:
                dispatcher.add_handler(name, handler)
            self._printer = []

    def _worker_lines(self, data: dict) -> None:
        who = data.get("actor_name") or data.get("task_name") or ""
        lines = data.get("lines", ())
        if data.get("pid") == "autoscaler":  # its periodic status report; only events, as Ray prints
            lines = [line for line in lines if ":event_summary:" in line]
        for line in lines:
            self.add(f"({who} pid={data.get('pid')}) {line}".replace("( pid", "(pid"))


class _Forward(logging.Handler):
    def __init__(self, add):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._add = add

    def emit(self, record: logging.LogRecord) -> None:
        self._add(self.format(record))
