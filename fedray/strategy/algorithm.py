"""The algorithm of a run, built from config: objective terms, client chain, aggregator, server chain.

One object says everything that decides what clients optimise and how their
updates become a step on the global model:

- `terms`: added to each client's local objective, with their server halves
  (the strategy's, e.g. FedProx's or SCAFFOLD's, then `clients.objective`);
- `client_transforms`: the chain applied to each update before it leaves its
  client (`clients.transforms`), state kept per client id;
- `aggregator`: combines the round's updates (`server.aggregator`);
- `server_transforms`: the chain from the aggregate to the step (`server.transforms`,
  then the strategy's own step: momentum, Adam, Yogi, ...).

Every piece comes from a registry by name or dotted path, with its factory's
arguments checked against the config (`fedray.config.registry`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from fedray.config.errors import ConfigError
from fedray.config.schema import RunConfig
from fedray.strategy.aggregate import AGGREGATORS, Aggregator
from fedray.strategy.presets import STRATEGIES
from fedray.strategy.terms import TERMS, Term
from fedray.transforms import TRANSFORMS, UpdateTransform, chain
from fedray.types import Context


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """What clients optimise and how their updates become a step (module docstring)."""

    terms: tuple[Term, ...]
    client_transforms: UpdateTransform
    aggregator: Callable[[int], Aggregator]
    """A fresh aggregator for updates of `num_params` floats."""
    server_transforms: UpdateTransform
    term_names: tuple[str, ...] = ()
    """Per term, the config key (and name) it came from: an error raised inside one names it."""
    client_chain_name: str = "the client chain"
    """The config keys of the client chain's components, for the same purpose."""

    def term_name(self, index: int) -> str:
        """The config key of term `index` (for errors raised inside it)."""
        return self.term_names[index] if index < len(self.term_names) else f"objective term {index}"

    def decode(self, payload: Any, ctx: Context) -> Any:
        """What a client sent as `delta`, back in float32 (undoing the client chain's codecs)."""
        decode = self.client_transforms.decode
        return payload if decode is None else decode(payload, ctx)


def plain_sgd_problem(cfg: RunConfig) -> str | None:
    """A term that reads the local steps as SGD steps (SCAFFOLD) with a client optimizer
    whose steps it cannot count: an adaptive one (Adam's steps are not lr x gradient), or
    momentum carried over between rounds (`train.persist_optimizer_state`), where the
    first steps of a round move by last round's gradients too. Plain SGD and SGD with
    momentum from a zero buffer are counted exactly (`terms.sgd_step_sum`)."""
    try:
        terms = [*STRATEGIES.build(cfg.server.strategy.name, **dict(cfg.server.strategy.args)).terms,
                 *(TERMS.build_component("clients.objective", c) for c in cfg.clients.objective)]
    except ValueError:  # the components' own problems, reported where they are built
        return None
    if not any(t.plain_sgd for t in terms):
        return None
    optimizer = cfg.train.optimizer.value
    if optimizer != "sgd":
        return (f"server.strategy={cfg.server.strategy.name!r} / clients.objective: SCAFFOLD's control update "
                f"counts the clients' SGD steps, but train.optimizer={optimizer!r} takes adaptive steps that "
                "would skew every control variate; set train.optimizer: sgd (momentum is fine)")
    if cfg.train.momentum and cfg.train.persist_optimizer_state:
        return (f"server.strategy={cfg.server.strategy.name!r} / clients.objective: SCAFFOLD's control update "
                f"counts the clients' SGD steps from a zero momentum buffer, but train.persist_optimizer_state="
                f"true carries train.momentum={cfg.train.momentum:g}'s buffer between rounds; set "
                "train.persist_optimizer_state: false")
    return None


def build_algorithm(cfg: RunConfig, extra_terms: Sequence[Term] = (),
                    codec: UpdateTransform | None = None) -> Algorithm:
    """The run's algorithm; ConfigError naming every bad component (key and reason).
    `codec` (built from `clients.codec` by `fedray.compress.build_codecs`) is the
    client chain's last step."""
    problems: list[str] = []

    def build(registry, key: str, component, *args):
        try:
            return registry.build_component(key, component, *args)
        except ValueError as err:
            problems.append(str(err))
            return None

    strategy = build(STRATEGIES, "server.strategy", cfg.server.strategy)
    client = [build(TRANSFORMS, f"clients.transforms[{i}]", c) for i, c in enumerate(cfg.clients.transforms)]
    server = [build(TRANSFORMS, f"server.transforms[{i}]", c) for i, c in enumerate(cfg.server.transforms)]
    terms = [build(TERMS, f"clients.objective[{i}]", c) for i, c in enumerate(cfg.clients.objective)]
    problems += encoder_problems(client + ([codec] if codec is not None else []))
    if build(AGGREGATORS, "server.aggregator", cfg.server.aggregator, 1) is not None:
        problems += aggregator_problems(cfg)
    if problems:
        raise ConfigError(problems)
    spec = cfg.server.aggregator

    def aggregator(num_params: int) -> Aggregator:
        return AGGREGATORS.build(spec.name, num_params, **dict(spec.args))

    names = ([f"server.strategy ({cfg.server.strategy.name})"] * len(strategy.terms)
             + [f"clients.objective[{i}] ({c.name})" for i, c in enumerate(cfg.clients.objective)]
             + ["a built-in term"] * len(extra_terms))
    chain_names = [f"clients.transforms[{i}] ({c.name})" for i, c in enumerate(cfg.clients.transforms)]
    chain_names += [f"clients.codec ({cfg.clients.codec.name})"] if codec is not None else []
    return Algorithm(
        terms=(*strategy.terms, *terms, *extra_terms),
        client_transforms=chain(*client, *([codec] if codec is not None else [])),
        aggregator=aggregator,
        server_transforms=chain(*server, strategy.server),
        term_names=tuple(names),
        client_chain_name=f"the client chain [{', '.join(chain_names)}]",
    )


def encoder_problems(client_chain: Sequence[UpdateTransform | None]) -> list[str]:
    """An encoder (a transform with a decode) outputs a payload, not an array, so nothing
    may follow it in the client chain."""
    return [f"clients.transforms[{i}] encodes the update (it has a decode), so it must be the last step "
            "of the client chain; give it as clients.codec instead"
            for i, t in enumerate(client_chain[:-1]) if t is not None and t.decode is not None]


def aggregator_problems(cfg: RunConfig) -> list[str]:
    """Cross-field rules of the built-in aggregators: Krum needs n > 2f + 2 updates."""
    spec = cfg.server.aggregator
    if spec.name not in ("krum", "multi_krum"):
        return []
    f = int(spec.args.get("num_malicious", 1))
    n = cfg.server.buffer_size if cfg.server.mode.value == "async" else cfg.server.clients_per_round
    if n > 2 * f + 2:
        return []
    what = "server.buffer_size" if cfg.server.mode.value == "async" else "server.clients_per_round"
    return [f"server.aggregator: {spec.name} with num_malicious={f} needs more than 2f + 2 = "
            f"{2 * f + 2} updates per round, but {what} is {n}"]


def initial_client_state(algorithm: Algorithm, params: np.ndarray) -> "KeptState":
    """A client's kept state before its first round."""
    return KeptState(None, tuple(t.init_client(params) for t in algorithm.terms),
                     algorithm.client_transforms.init(params))


class KeptState(NamedTuple):
    """What one client keeps between its rounds."""

    optimizer: Any
    """The local optimizer's state dict (with `train.persist_optimizer_state`), else None."""
    terms: tuple
    """Each objective term's client state (e.g. SCAFFOLD's c_i)."""
    transforms: Any
    """The client chain's state (e.g. error-feedback residuals)."""
    privacy: Any = None
    """Local DP-SGD's account of the client's privacy spending so far (`train.dp`), else None."""
    personal: Any = None
    """The client's personal tensors ({name: array}: FedPer's layers, Ditto's model;
    `fedray.personalization`), else None. Never sent."""

    def is_empty(self) -> bool:
        """Nothing worth keeping: no optimizer state, only empty tuples elsewhere."""
        return (self.optimizer is None and _empty(self.terms) and _empty(self.transforms)
                and self.privacy is None and not self.personal)


def _empty(state: Any) -> bool:
    return state is None or (isinstance(state, tuple) and all(_empty(s) for s in state))
