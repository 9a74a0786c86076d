"""Combinations of privacy features with the rest of a run that cannot work: one table.

Each `Refusal` names the keys that cannot go together, why, an example (overrides on
the defaults) that hits it, and the check that finds it in a config. The launcher
reports every refusal that applies with the other config problems before Ray starts;
the tests are generated from the table (one per refusal, from its example); and
docs/guides/combinations.md is the table as Markdown (`combinations_page`, checked by
a test), so what is refused, what is documented and what is tested cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from fedray.config.schema import RunConfig, ServerMode
from fedray.privacy.build import MIN_LEVELS, build_mechanism, build_secure_params, with_privacy
from fedray.privacy.secagg.quantize import levels
from fedray.strategy.algorithm import build_algorithm, plain_sgd_problem
from fedray.strategy.presets import STRATEGIES

SECAGG = "server.secure_aggregation={name: secagg_plus}"
CENTRAL_DP = "server.privacy={name: fixed_clip, args: {noise_multiplier: 1.0, clip_norm: 1.0}}"
LOCAL_DP = "train.dp={noise_multiplier: 1.0}"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One combination that is a config error."""

    keys: str
    """The keys that cannot go together, as users write them."""
    why: str
    """One sentence for the docs: what would break."""
    example: tuple[str, ...]
    """`key=value` overrides on the defaults that hit this refusal (the test of it)."""
    match: str
    """Text the error message contains (what the generated test looks for)."""
    check: Callable[[RunConfig], "str | None"]
    """The message naming the keys and values if `cfg` has the combination, else None."""


def _async(key: str, what: str) -> Callable[[RunConfig], "str | None"]:
    def check(cfg: RunConfig) -> str | None:
        on = cfg.server.privacy if key == "server.privacy" else cfg.server.secure_aggregation
        if on is not None and cfg.server.mode is ServerMode["async"]:
            return f"{key} needs server.mode: sync ({what} is defined over synchronous rounds)"
        return None
    return check


def _aggregator(key: str) -> Callable[[RunConfig], "str | None"]:
    def check(cfg: RunConfig) -> str | None:
        on = cfg.server.privacy if key == "server.privacy" else cfg.server.secure_aggregation
        if on is not None and cfg.server.aggregator.name != "weighted_mean":
            return (f"{key} replaces the weighted mean with its own sum, so server.aggregator="
                    f"{cfg.server.aggregator.name!r} cannot be used with it")
        return None
    return check


def _availability(cfg: RunConfig) -> str | None:
    if cfg.server.privacy is not None and cfg.clients.availability.model != "always":
        return ("server.privacy: the accountant assumes every client can be sampled in every round; "
                f"clients.availability.model={cfg.clients.availability.model!r} breaks that")
    return None


def _stacked_adapters(cfg: RunConfig) -> str | None:
    peft = cfg.model.peft
    if cfg.server.privacy is not None and peft is not None and peft.aggregation == "stack":
        return ("server.privacy: model.peft.aggregation=stack folds updates into the base weights past the "
                "server chain, where the noise is added; use aggregation: mean")
    return None


def _too_few_levels(cfg: RunConfig) -> str | None:
    params = build_secure_params(cfg)
    left = levels(params.bits, cfg.clients.num_clients) if params is not None else MIN_LEVELS
    if left < MIN_LEVELS:
        return (f"server.secure_aggregation: bits={params.bits} leaves {left} fixed-point levels per value for "
                f"{cfg.clients.num_clients} clients; at least {MIN_LEVELS} are needed (raise bits)")
    return None


def _adaptive_clip(cfg: RunConfig) -> str | None:
    privacy = cfg.server.privacy
    if cfg.server.secure_aggregation is not None and privacy is not None and privacy.name == "adaptive_clip":
        return ("server.secure_aggregation: adaptive_clip's unclipped-update counts would reach the server "
                "unmasked; use server.privacy.name: fixed_clip with secure aggregation")
    return None


def _mixed_ranks(cfg: RunConfig) -> str | None:
    peft = cfg.model.peft
    if cfg.server.secure_aggregation is None or peft is None:
        return None
    if peft.aggregation != "mean" or peft.client_ranks or peft.rank_rule != "uniform":
        return ("server.secure_aggregation needs every client to send an update of one size: "
                "model.peft.aggregation: mean with one rank (rank_rule: uniform, no client_ranks)")
    return None


def _codec(cfg: RunConfig) -> str | None:
    if cfg.server.secure_aggregation is not None and cfg.clients.codec.name != "none":
        return (f"server.secure_aggregation: clients.codec={cfg.clients.codec.name!r} encodes the update, which "
                "the server could not decode from a masked sum (and SecAgg+ encodes it in fixed point "
                "itself); set clients.codec.name: none")
    return None


def _algorithm(cfg: RunConfig):
    """The run's algorithm with privacy in place, or None where its own pieces fail to
    build (reported where they are checked)."""
    try:
        return with_privacy(build_algorithm(cfg), cfg)
    except ValueError:
        return None


def _encoding_transform(cfg: RunConfig) -> str | None:
    if cfg.server.secure_aggregation is None:
        return None
    algorithm = _algorithm(cfg)
    if algorithm is not None and algorithm.client_transforms.decode is not None:
        return ("server.secure_aggregation: clients.transforms encode the update (a codec), which the server "
                "could not decode from a masked sum")
    return None


def _unmasked_terms(cfg: RunConfig) -> str | None:
    if cfg.server.secure_aggregation is None:
        return None
    algorithm = _algorithm(cfg)
    if algorithm is not None and any(term.reducers(1) for term in algorithm.terms):
        return (f"server.secure_aggregation: the objective terms of server.strategy={cfg.server.strategy.name!r}"
                f" / clients.objective / server.distill send payloads that would reach the server unmasked")
    return None


def _dp_accumulation(cfg: RunConfig) -> str | None:
    if cfg.train.dp is not None and cfg.train.grad_accum_steps > 1:
        return "train.dp: per-example clipping needs one minibatch per step; set train.grad_accum_steps: 1"
    return None


def _dp_max_grad_norm(cfg: RunConfig) -> str | None:
    if cfg.train.dp is not None and cfg.train.max_grad_norm is not None:
        return ("train.dp clips every example's gradient (train.dp.max_grad_norm); "
                "train.max_grad_norm must be null")
    return None


def _dp_fp16(cfg: RunConfig) -> str | None:
    if cfg.train.dp is not None and cfg.train.mixed_precision.value == "fp16":
        return "train.dp: fp16 needs a gradient scaler, which Opacus's optimizer does not take; use bf16 or off"
    return None


def _dp_terms(cfg: RunConfig) -> str | None:
    if cfg.train.dp is None:
        return None
    try:
        strategy_terms = STRATEGIES.build(cfg.server.strategy.name, **dict(cfg.server.strategy.args)).terms
    except ValueError:  # reported as server.strategy's own problem
        strategy_terms = ()
    if cfg.clients.objective or cfg.server.distill.server_to_client or strategy_terms:
        return (f"train.dp: objective terms (server.strategy={cfg.server.strategy.name!r}, clients.objective, "
                "server.distill.server_to_client) add gradients that per-example clipping does not bound")
    return None


REFUSALS: tuple[Refusal, ...] = (
    Refusal("server.privacy + server.mode: async", "the accountant's release is defined over synchronous rounds",
            (CENTRAL_DP, "server.mode=async"), "server.privacy needs server.mode: sync",
            _async("server.privacy", "the accountant's release")),
    Refusal("server.privacy + server.aggregator (not weighted_mean)",
            "central DP adds noise to its own clipped sum", (CENTRAL_DP, "server.aggregator.name=median"),
            "server.privacy replaces the weighted mean", _aggregator("server.privacy")),
    Refusal("server.privacy + clients.availability.model (not always)",
            "the accountant assumes every client can be sampled in every round",
            (CENTRAL_DP, "clients.availability.model=diurnal"), "the accountant assumes every client", _availability),
    Refusal("server.privacy + model.peft.aggregation: stack",
            "stacking folds updates into the base weights past the noise",
            (CENTRAL_DP, "model.name=tiny_lm", "model.peft={r: 2, aggregation: stack}"),
            "model.peft.aggregation=stack", _stacked_adapters),
    Refusal("server.secure_aggregation + server.mode: async", "the protocol is defined over synchronous rounds",
            (SECAGG, "server.mode=async"), "server.secure_aggregation needs server.mode: sync",
            _async("server.secure_aggregation", "the protocol")),
    Refusal("server.secure_aggregation + server.aggregator (median, Krum, ...)",
            "a robust aggregator needs every update; the server sees only their sum",
            (SECAGG, "server.aggregator.name=median"), "server.secure_aggregation replaces the weighted mean",
            _aggregator("server.secure_aggregation")),
    Refusal("server.secure_aggregation.args.bits + clients.num_clients",
            "the fixed-point sum of every client must fit in Z_2^bits with 8 bits per value left",
            (SECAGG.replace("}", ", args: {bits: 8}}"),), "fixed-point levels per value", _too_few_levels),
    Refusal("server.secure_aggregation + server.privacy: adaptive_clip",
            "adaptive clipping's unclipped-update counts would travel unmasked",
            (SECAGG, "server.privacy={name: adaptive_clip, args: {noise_multiplier: 0.5}}"),
            "adaptive_clip's unclipped-update counts", _adaptive_clip),
    Refusal("server.secure_aggregation + model.peft (mixed ranks, stack)",
            "every client must send an update of one size",
            (SECAGG, "model.name=tiny_lm", "model.peft={r: 2, aggregation: stack}"),
            "an update of one size", _mixed_ranks),
    Refusal("server.secure_aggregation + clients.codec", "a masked sum of encoded updates cannot be decoded",
            (SECAGG, "clients.codec.name=int8"), "clients.codec='int8'", _codec),
    Refusal("server.secure_aggregation + clients.transforms (an encoding transform)",
            "a masked sum of encoded updates cannot be decoded",
            (SECAGG, "clients.transforms=[{name: 'tests.helpers:encodes_its_update'}]"), "clients.transforms encode the update",
            _encoding_transform),
    Refusal("server.secure_aggregation + server.strategy: scaffold / clients.objective / server.distill",
            "the terms' payloads (control variates, logits) would travel unmasked",
            (SECAGG, "server.strategy.name=scaffold"), "would reach the server unmasked", _unmasked_terms),
    Refusal("server.strategy: scaffold + train.optimizer: adam / adamw",
            "SCAFFOLD's control update counts the clients' SGD steps (with or without momentum)",
            ("server.strategy.name=scaffold", "train.optimizer=adam"), "takes adaptive steps", plain_sgd_problem),
    Refusal("server.strategy: scaffold + train.momentum + train.persist_optimizer_state",
            "a momentum buffer carried between rounds moves the first steps by last round's gradients",
            ("server.strategy.name=scaffold", "train.momentum=0.5", "train.persist_optimizer_state=true"),
            "carries train.momentum=0.5's buffer", plain_sgd_problem),
    Refusal("train.dp + train.grad_accum_steps > 1", "per-example clipping needs one minibatch per step",
            (LOCAL_DP, "train.grad_accum_steps=2"), "set train.grad_accum_steps: 1", _dp_accumulation),
    Refusal("train.dp + train.max_grad_norm", "DP-SGD clips every example's gradient itself",
            (LOCAL_DP, "train.max_grad_norm=1.0"), "train.max_grad_norm must be null", _dp_max_grad_norm),
    Refusal("train.dp + train.mixed_precision: fp16", "Opacus's optimizer takes no gradient scaler",
            (LOCAL_DP, "train.mixed_precision=fp16"), "fp16 needs a gradient scaler", _dp_fp16),
    Refusal("train.dp + objective terms (server.strategy fedprox/scaffold, clients.objective, server.distill)",
            "their gradients are not bounded by per-example clipping",
            (LOCAL_DP, "server.strategy.name=fedprox"), "per-example clipping does not bound", _dp_terms),
)
"""Every combination fedray refuses around privacy and the algorithm, in the order the
docs list them."""


def privacy_problems(cfg: RunConfig) -> list[str]:
    """Everything wrong with `server.privacy`, `server.secure_aggregation` and `train.dp`
    in this config: their own arguments, then every refusal in REFUSALS that applies."""
    problems: list[str] = []
    for build in (build_mechanism, build_secure_params):
        try:
            build(cfg)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        return problems  # the refusals read the same arguments
    for refusal in REFUSALS:
        try:
            found = refusal.check(cfg)
        except ValueError as err:
            found = str(err)
        if found is not None and found not in problems:
            problems.append(found)
    return problems


def combinations_page() -> str:
    """docs/guides/combinations.md: REFUSALS as a Markdown table (a test keeps the file equal)."""
    rows = [f"| `{r.keys}` | {r.why} | `{' '.join(r.example)}` |" for r in REFUSALS]
    return "\n".join([
        "# Combinations fedray refuses",
        "",
        "<!-- generated from fedray/privacy/rules.py (REFUSALS); "
        "tests/unit/privacy/test_rules.py checks that this file is up to date -->",
        "",
        "Each of these is a config error before Ray starts (`fedray validate` and `fedray run` exit",
        "with status 2 and a message naming the keys and their values). Every row is also a test:",
        "its example, as `key=value` overrides on the defaults, must be refused with its message.",
        "",
        "| keys | why | example |",
        "| --- | --- | --- |",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(combinations_page(), end="")
