"""Launching a run: check and build everything, start (or join) Ray, hand over to the driver.

Everything that can be wrong with a config is found here before Ray starts and
reported at once as a ConfigError. The rounds themselves run in the server
actor; the driver (`fedray.driver`) asks for one round at a time, prints a line
per round, and leaves the run directory consistent however it stops.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Callable

from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig
from fedray.data.plan import DataPlan, plan_federated_dataset, schedule_check_tables
from fedray.driver import Driver, PreparedRun, StartUp, format_round, resource_problems, run_key  # noqa: F401
from fedray.session import RayLogs, RayStart, ray_session  # noqa: F401  (ray_session re-exported)
from fedray.signals import Terminated, sigterm_as_interrupt, sigterm_received

if TYPE_CHECKING:
    from fedray.client.pool import WarmActors


def prepare(cfg: RunConfig, source: str | None = None, local: bool = True,
            on_checked: Callable[[], None] | None = None) -> PreparedRun:
    """Build the data and check every named component; all problems in one ConfigError.
    `local`: the run writes from this machine, so `output_dir` is checked here too (not
    for `fedray submit`, whose output_dir is a path on the cluster). `on_checked` is
    called once every component checks out, before the data is built: `fedray run`
    starts Ray there, so it comes up while the data is built."""
    from fedray.lifecycle.continual import schedule_problems
    from fedray.models.quantize import quantization_problems

    began = time.perf_counter()
    problems: list[str] = output_dir_problems(cfg) if local else []
    problems += component_problems(cfg)
    if not problems:
        problems += quantization_problems(cfg)
    if not problems and on_checked is not None:
        on_checked()
    dataset = None
    if not any(p.startswith(("data.", "model.")) for p in problems):
        try:
            held_out = cfg.server.foundation_model.model is not None and not cfg.server.distill.public.generated
            public = cfg.server.distill.public_size if held_out else 0
            # a plan from the rows' labels or owners: no client's rows are loaded here
            dataset = plan_federated_dataset(cfg.data, cfg.model, cfg.clients.num_clients, cfg.seed, public)
        except (ValueError, OSError) as err:
            problems.append(f"data: {err}")
    if dataset is not None:
        problems += schedule_problems(cfg.data.schedule, *schedule_check_tables(dataset, cfg.data.schedule.name),
                                      dataset.owner_names)
    num_params = 0
    if dataset is not None and not problems:
        num_params, found = model_problems(cfg, dataset)
        problems += found
        problems += budget_problems(cfg, num_params)
    if problems:
        raise ConfigError(problems, source)
    return PreparedRun(cfg, dataset, num_params, time.perf_counter() - began)


def budget_problems(cfg: RunConfig, num_params: int) -> list[str]:
    """`server.budget_mb` must fit at least one round (as estimated before any is measured)."""
    from fedray.server.budget import MB, estimated_round_bytes

    if cfg.server.budget_mb is None or not num_params:
        return []
    one = estimated_round_bytes(cfg.server.clients_per_round, num_params) / MB
    if one > cfg.server.budget_mb:
        return [f"server.budget_mb={cfg.server.budget_mb:g} does not fit one round: ~{one:.3f} MB "
                f"(server.clients_per_round={cfg.server.clients_per_round} clients x 2 directions x "
                f"{num_params:,} trainable parameters x 4 bytes)"]
    return []


def model_problems(cfg: RunConfig, dataset: DataPlan) -> tuple[int, list[str]]:
    """(trainable parameters, problems). A model whose size follows from its config (the
    MLP) is only counted where nothing needs its tensors' names, so the driver needs no
    torch; any other is built on torch's meta device, with its adapters, codec rules,
    watermark and the foundation model checked against it."""
    from fedray.models.build import MODELS, count_params

    try:
        counted = count_params(cfg.model, dataset.info)
    except ValueError as err:
        return 0, [f"model: {err}"]
    if counted is not None and not _needs_layout(cfg):
        return counted, []
    import torch

    from fedray.compress import codec_problems
    from fedray.lifecycle.watermark import watermark_problems
    from fedray.models.flat import param_spec
    from fedray.personalization import local_names, personalize

    try:
        with torch.device("meta"):
            model = MODELS.build(cfg.model.name, cfg.model, dataset.info)
            personalize(cfg, model)
        local = local_names(cfg, model)
        num_params = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n not in local)
        check_adapters(cfg, model, dataset)
        problems = codec_problems(cfg, param_spec(model)) + personal_layer_problems(cfg, model, local)
    except (ValueError, TypeError, RuntimeError) as err:
        return 0, [f"model: {err}"]
    if not problems:
        problems += watermark_problems(cfg, param_spec(model), dataset.info)
    if cfg.server.foundation_model.model is not None and not problems:
        problems += foundation_problems(cfg, dataset, model)
    return num_params, problems


def _needs_layout(cfg: RunConfig) -> bool:
    """Whether checking the config needs the model's tensors (names and shapes)."""
    return (cfg.server.foundation_model.model is not None or cfg.server.watermark.name is not None
            or cfg.clients.codec.name == "content" or cfg.clients.personalization is not None
            or cfg.server.strategy.name == "local")


def personal_layer_problems(cfg: RunConfig, model, local: frozenset[str]) -> list[str]:
    """A method's personal tensors checked against the model: patterns that match nothing,
    a method that keeps nothing local (FedBN on a model without norm layers)."""
    from fedray.models.flat import travelling
    from fedray.personalization import build_personalization

    method = build_personalization(cfg)
    if method is None or method.name == "local":
        return []
    names = list(travelling(model))
    problems = method.layer_problems(names)
    if not problems and method.local is not None and not local:
        problems.append(f"clients.personalization: {method.name} keeps no tensor of model.name={cfg.model.name} "
                        "local (it has no layers of the kind it keeps personal)")
    return problems


def component_problems(cfg: RunConfig) -> list[str]:
    """Every pluggable piece named in the config resolves, takes the arguments it is
    given and builds the right kind of object: the algorithm's components, the
    selector, the data and model builders, simulated hardware, attacks."""
    import numpy as np

    from fedray.client.attacks import ATTACKS
    from fedray.compress import build_codecs
    from fedray.data.partition import PARTITIONERS
    from fedray.data.datasets import DATASETS
    from fedray.data.tokenize import TOKENIZERS
    from fedray.hetero.availability import build_availability
    from fedray.hetero.devices import build_devices
    from fedray.lifecycle import continual  # noqa: F401  (registers ewc, replay, task_anchor)
    from fedray.lifecycle.contribution import CONTRIBUTIONS
    from fedray.lifecycle.watermark import SCHEMES
    from fedray.models.build import MODELS
    from fedray.privacy import privacy_problems
    from fedray.selection import SELECTORS
    from fedray.strategy.algorithm import build_algorithm
    from fedray.strategy.lora import ADAPTER_AGGREGATIONS
    from fedray.strategy.staleness import STALENESS

    problems: list[str] = []

    def check(key: str, call: Callable[[], object]) -> None:
        try:
            call()
        except ConfigError as err:
            problems.extend(err.problems)
        except ValueError as err:
            problems.append(f"{key}: {err}")

    uplink: list = []  # the client codec, if it builds, ends the client chain
    check("clients.codec", lambda: uplink.append(build_codecs(cfg).uplink))
    check("server.strategy", lambda: build_algorithm(cfg, codec=uplink[0] if uplink else None))
    problems += privacy_problems(cfg)
    check("server.selection.name", lambda: SELECTORS.build(cfg.server.selection.name, cfg.server.selection))
    check("server.staleness", lambda: _staleness_weight(STALENESS.build(cfg.server.staleness, cfg.server)))
    check("data.dataset", lambda: DATASETS.check_call(cfg.data.dataset, cfg.data))
    check("data.partition", lambda: PARTITIONERS.check_call(
        cfg.data.partition, np.zeros(1, np.int64), cfg.clients.num_clients, cfg.data, np.random.default_rng(0)))
    check("data.tokenizer", lambda: TOKENIZERS.check_call(cfg.data.tokenizer, cfg.model))
    check("model.name", lambda: MODELS.check_call(cfg.model.name, cfg.model, None))
    if cfg.server.watermark.name is not None:
        check("server.watermark", lambda: SCHEMES.build(cfg.server.watermark.name, **cfg.server.watermark.args))
    if cfg.data.schedule.name is not None:
        check("data.schedule.name", lambda: continual.SCHEDULES.get(cfg.data.schedule.name))
    if cfg.model.peft is not None:
        check("model.peft.aggregation", lambda: ADAPTER_AGGREGATIONS.get(cfg.model.peft.aggregation))
    if cfg.clients.attack.name is not None:
        check("clients.attack.name", lambda: ATTACKS.build(cfg.clients.attack.name))
    check("clients.personalization", lambda: problems.extend(personalization_problems(cfg)))
    if cfg.server.contribution.enabled:
        check("server.contribution", lambda: CONTRIBUTIONS.build(cfg.server.contribution.name,
                                                                 **cfg.server.contribution.args))
    for key, build, section in (
        ("clients.profiles.source", build_devices, cfg.clients.profiles),
        ("clients.availability.model", build_availability, cfg.clients.availability),
    ):
        # reads trace files: a bad one is a config error, found before Ray starts
        check(key, lambda build=build, section=section: build(section, cfg.clients.num_clients, cfg.seed))
    return problems


def personalization_problems(cfg: RunConfig) -> list[str]:
    """The method builds and fits the rest of the run."""
    from fedray.personalization import build_personalization

    method = build_personalization(cfg)
    if method is None:
        return []
    if cfg.model.peft is not None and not method.on_lora:
        return [f"clients.personalization / server.strategy.name: {method.name} personalises the whole model, "
                "but model.peft trains LoRA adapters over a frozen base; use clients.personalization: "
                "{name: personal_adapter}"]
    return method.problems(cfg) + local_problems(cfg)


def local_problems(cfg: RunConfig) -> list[str]:
    """`server.strategy.name: local` sends nothing: pieces that act on what travels have
    nothing to act on."""
    if cfg.server.strategy.name != "local":
        return []
    acting = [key for key, on in (("clients.codec", cfg.clients.codec.name != "none"),
                                  ("clients.transforms", bool(cfg.clients.transforms)),
                                  ("server.transforms", bool(cfg.server.transforms)),
                                  ("server.codec", cfg.server.codec.name != "none"),
                                  ("server.privacy", cfg.server.privacy is not None),
                                  ("server.secure_aggregation", cfg.server.secure_aggregation is not None)) if on]
    return [f"server.strategy.name: local sends nothing between clients and server, so {', '.join(acting)} "
            "would act on nothing; drop it or federate"] if acting else []


def _staleness_weight(weight) -> None:
    """A staleness weighting maps a staleness (int) to a weight in (0, 1]."""
    value = weight(0) if callable(weight) else None
    if not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"must map staleness 0 to a weight in (0, 1], got {value!r}")


def check_adapters(cfg: RunConfig, model, dataset: DataPlan) -> None:
    """Build the LoRA aggregation once (on the dry model) so its errors surface now."""
    from fedray.models.adapters import client_ranks, lora_layout
    from fedray.personalization import shared_spec
    from fedray.strategy.algorithm import build_algorithm
    from fedray.strategy.lora import build_exchange

    if cfg.model.peft is None:
        return
    spec = shared_spec(cfg, model)
    ranks = client_ranks(cfg.model.peft, dataset.sizes())
    build_exchange(cfg, build_algorithm(cfg), spec.num_params, lora_layout(spec, cfg.model.peft), ranks,
                   lambda cid: 0)


def foundation_problems(cfg: RunConfig, dataset: DataPlan, client_model) -> list[str]:
    """Knowledge transfer needs one output space and a usable public set (see
    `fedray.foundation.checks`)."""
    from fedray.foundation.checks import foundation_problems as problems

    return problems(cfg, dataset, client_model)


def run(
    prepared: PreparedRun,
    console: Callable[[str], None] = print,
    resume: str | None = None,
    fresh: bool = False,
    *,
    warm: WarmActors | None = None,
    start: RayStart | None = None,
    logs: RayLogs | None = None,
    began: float | None = None,
) -> dict:
    """Run every round; returns summary.json's content (with `run_dir`, `placement`, `wall_s`).

    Ray: the one `start` is bringing up (`fedray run` starts it while the data is
    built), else the one initialised in this process, else a new local one (shut
    down at the end when started for this run). Ray's own log lines go to the run's
    log.txt through `logs` (a quiet one of its own if None). `warm`: client actors of
    this process's previous runs to take over, where their resources match (a
    completed run leaves its actors there). `began`: when the command started, for
    the start-up line.

    With `resume`, continue the run in that directory from its newest checkpoint that
    loads, after checking that `prepared.cfg` changes nothing a resume may not change
    (`fedray.server.resume`); `fresh` lets a directory without a checkpoint start again
    from round 1. A dead server actor is restarted from the newest checkpoint up to
    `server.max_restarts` times.

    However the run ends (completed; failed: too few clients, the server gone for good,
    a file it could not write; interrupted: Ctrl-C or SIGTERM, after the round in
    progress), summary.json is written, and it claims only rounds whose checkpoint is on
    disk. Problems found before anything runs raise ConfigError with nothing written.
    """
    from fedray.config.load import to_yaml
    from fedray.server.resume import open_for_resume, record_resume
    from fedray.server.rundir import Location, RunDirectory, unique_run_dir

    cfg = prepared.cfg
    started = time.perf_counter()
    point = None
    if resume:
        run_dir = Location.parse(resume)
        exact = cfg.model.peft is None and prepared.num_params > 0  # without LoRA: every trainable parameter travels
        point = open_for_resume(run_dir, cfg, fresh, console, prepared.num_params if exact else None)
    else:
        run_dir = unique_run_dir(cfg.output_dir, cfg.name)  # created once Ray is up and the run placeable
    startup = StartUp(data_s=prepared.prepare_s)
    driver = Driver(prepared, run_dir, console, started, warm, startup, began)
    del prepared  # the driver drops the training rows once the actors have them
    with contextlib.ExitStack() as cleanup:
        logs = logs if logs is not None else cleanup.enter_context(RayLogs())
        waiting = time.perf_counter()
        ray_start = cleanup.enter_context(ray_session(cfg, start))
        startup.ray_s, startup.waited_s = ray_start.seconds, time.perf_counter() - waiting
        startup.ray_alongside = start is not None and ray_start.owned
        driver.signals = cleanup.enter_context(sigterm_as_interrupt())
        driver.reserve(cleanup)  # the cluster can place the run: now it may leave a trace
        status, begun = "failed", False  # until the rounds say otherwise
        try:
            if point is None:
                make_run_dir(run_dir)
            begun = True  # from here on, however it stops, summary.json says so
            console(f"fedray: run '{cfg.name}' -> {run_dir}")
            logs.attach(run_dir)
            if point is not None:
                record_resume(run_dir, cfg, point, console)
            else:
                RunDirectory(run_dir).write_config(to_yaml(cfg))
            driver.start_server(resume=point is not None and point.after_round > 0)
            status = driver.run_rounds()
        except KeyboardInterrupt as err:
            status = "interrupted"
            driver.stopped_by = "SIGTERM" if isinstance(err, Terminated) or sigterm_received() else "Ctrl-C"
            raise
        finally:
            summary = driver.finish(status) if begun else None
    return summary


def make_run_dir(run_dir):
    """Create `run_dir`; ConfigError naming it if it cannot be created."""
    try:
        run_dir.mkdir()
    except OSError as err:
        raise ConfigError([f"output_dir: cannot create the run directory {run_dir}: {err}"], "output_dir") from None
    return run_dir


URI_CHECK_S = 30.0
"""Longest wait for an object store named by output_dir to answer, before Ray starts."""


def uri_problems(uri: str) -> list[str]:
    """An output_dir URI must name a filesystem pyarrow knows and answer a listing of its
    folder within URI_CHECK_S (the run would otherwise fail only after Ray started)."""
    import threading

    from fedray.server.storage import Location

    found: list[str] = []

    def probe() -> None:
        try:
            where = Location.parse(uri)
            where.fs.get_file_info(where.path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
            found.append(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        else:
            found.append("")

    thread = threading.Thread(target=probe, name="fedray-output-dir", daemon=True)
    thread.start()
    thread.join(URI_CHECK_S)
    if not found:
        return [f"output_dir={uri}: no answer within {URI_CHECK_S:.0f} s"]
    return [f"output_dir={uri}: cannot be used: {found[0]}"] if found[0] else []


def output_dir_problems(cfg: RunConfig) -> list[str]:
    """A local output_dir must be a directory this process may write into, or creatable as one."""
    from fedray.config.paths import unwritable_folder
    from fedray.server.storage import is_uri

    from fedray.server.storage import Location

    folder = cfg.output_dir
    if is_uri(folder):
        where = Location.parse(folder) if folder.startswith("file:") else None
        if where is None or not where.is_local:
            return uri_problems(folder)
        folder = where.path  # file://: this machine's filesystem, checked as a local folder
    problem = unwritable_folder(folder)
    return [] if problem is None else [f"output_dir: {problem} (output_dir={cfg.output_dir})"]


