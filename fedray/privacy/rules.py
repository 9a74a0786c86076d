"""Combinations of privacy features with the rest of a run that cannot work, each named
with its keys (reported with every other config problem before Ray starts)."""

from __future__ import annotations

from fedray.config.schema import RunConfig, ServerMode
from fedray.privacy.build import MIN_LEVELS, build_mechanism, build_secure_params, with_privacy
from fedray.privacy.secagg.quantize import levels
from fedray.strategy.algorithm import build_algorithm
from fedray.strategy.presets import STRATEGIES


def privacy_problems(cfg: RunConfig) -> list[str]:
    """Everything wrong with `server.privacy`, `server.secure_aggregation` and `train.dp`
    in this config."""
    problems: list[str] = []
    for check in (_central, _secure, _local):
        try:
            problems += check(cfg)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _common(cfg: RunConfig, key: str, what: str) -> list[str]:
    out = []
    if cfg.server.mode is ServerMode["async"]:
        out.append(f"{key} needs server.mode: sync ({what} is defined over synchronous rounds)")
    if cfg.server.aggregator.name != "weighted_mean":
        out.append(f"{key} replaces the weighted mean with its own sum, so server.aggregator="
                   f"{cfg.server.aggregator.name!r} cannot be used with it")
    return out


def _central(cfg: RunConfig) -> list[str]:
    if cfg.server.privacy is None:
        return []
    out = _common(cfg, "server.privacy", "the accountant's release")
    if cfg.clients.availability.model != "always":
        out.append(f"server.privacy: the accountant assumes every client can be sampled in every round; "
                   f"clients.availability.model={cfg.clients.availability.model!r} breaks that")
    if cfg.model.peft is not None and cfg.model.peft.aggregation == "stack":
        out.append("server.privacy: model.peft.aggregation=stack folds updates into the base weights past the "
                   "server chain, where the noise is added; use aggregation: mean")
    try:
        build_mechanism(cfg)
    except ValueError as err:
        out.append(str(err))
    return out


def _secure(cfg: RunConfig) -> list[str]:
    if cfg.server.secure_aggregation is None:
        return []
    out = _common(cfg, "server.secure_aggregation", "the protocol")
    params = build_secure_params(cfg)
    left = levels(params.bits, cfg.clients.num_clients)
    if left < MIN_LEVELS:
        out.append(f"server.secure_aggregation: bits={params.bits} leaves {left} fixed-point levels per value for "
                   f"{cfg.clients.num_clients} clients; at least {MIN_LEVELS} are needed (raise bits)")
    if cfg.server.privacy is not None and cfg.server.privacy.name == "adaptive_clip":
        out.append("server.secure_aggregation: adaptive_clip's unclipped-update counts would reach the server "
                   "unmasked; use server.privacy.name: fixed_clip with secure aggregation")
    peft = cfg.model.peft
    if peft is not None and (peft.aggregation != "mean" or peft.client_ranks or peft.rank_rule != "uniform"):
        out.append("server.secure_aggregation needs every client to send an update of one size: "
                   "model.peft.aggregation: mean with one rank (rank_rule: uniform, no client_ranks)")
    if out:
        return out
    try:
        algorithm = with_privacy(build_algorithm(cfg), cfg)
    except ValueError:  # the components' own problems, reported where they are checked
        return out
    if algorithm.client_transforms.decode is not None:
        out.append("server.secure_aggregation: clients.transforms encode the update (a codec), which the server "
                   "could not decode from a masked sum")
    if any(term.reducers(1) for term in algorithm.terms):
        out.append(f"server.secure_aggregation: the objective terms of server.strategy={cfg.server.strategy.name!r}"
                   f" / clients.objective / server.distill send payloads that would reach the server unmasked")
    return out


def _local(cfg: RunConfig) -> list[str]:
    if cfg.train.dp is None:
        return []
    out = []
    if cfg.train.grad_accum_steps > 1:
        out.append("train.dp: per-example clipping needs one minibatch per step; set train.grad_accum_steps: 1")
    if cfg.train.max_grad_norm is not None:
        out.append("train.dp clips every example's gradient (train.dp.max_grad_norm); "
                   "train.max_grad_norm must be null")
    if cfg.train.mixed_precision.value == "fp16":
        out.append("train.dp: fp16 needs a gradient scaler, which Opacus's optimizer does not take; use bf16 or off")
    try:
        strategy_terms = STRATEGIES.build(cfg.server.strategy.name, **dict(cfg.server.strategy.args)).terms
    except ValueError:  # reported as server.strategy's own problem
        strategy_terms = ()
    regularized = bool(cfg.clients.objective) or cfg.server.distill.server_to_client or bool(strategy_terms)
    if regularized:
        out.append(f"train.dp: objective terms (server.strategy={cfg.server.strategy.name!r}, clients.objective, "
                   "server.distill.server_to_client) add gradients that per-example clipping does not bound")
    return out
