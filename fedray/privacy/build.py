"""Privacy and secure aggregation built from config and composed with the algorithm.

`with_privacy(algorithm, cfg)` puts `server.privacy`'s pieces into the algorithm
(clip first in the client chain, noise first in the server chain, the fixed
denominator mean as aggregator, the accounting term) and, with
`server.secure_aggregation`, makes the aggregator a sum of masked inputs.
`privacy_problems(cfg)` names every combination that cannot work (the launcher
reports them before Ray starts).
"""

from __future__ import annotations

import dataclasses
import math

from fedray.config.registry import Registry
from fedray.config.schema import RunConfig
from fedray.privacy.accountant import Sampling
from fedray.privacy.mechanism import PRIVACY, Mechanism, Participation
from fedray.privacy.secagg.aggregate import SecureSum
from fedray.privacy.secagg.messages import Params
from fedray.privacy.secagg.quantize import levels
from fedray.strategy.algorithm import Algorithm
from fedray.transforms import chain

SAMPLING = {"poisson": "poisson", "random": "without_replacement"}
"""Selectors whose sampling an accountant can analyse, and how it is called there."""
MIN_LEVELS = 255
"""Fewest fixed-point levels per value secure aggregation accepts (8 bits)."""

SECURE_AGGREGATION: Registry = Registry("secure aggregation", returns=Params)
"""`factory(**args) -> Params`, for `server.secure_aggregation`."""


@SECURE_AGGREGATION.register("secagg_plus")
def secagg_plus(threshold: int, num_neighbours: int, bits: int = 32, clip_range: float = 1.0,
                max_weight: float | None = None) -> Params:
    """SecAgg+ (Bell et al. 2020): shares among `num_neighbours` ring neighbours, any
    `threshold` of which reconstruct a client's secrets; updates clipped to
    [-clip_range, clip_range] per value and encoded in Z_{2^bits}."""
    if not 2 <= num_neighbours or num_neighbours % 2:
        raise ValueError(f"num_neighbours must be an even number >= 2 (half on each side of the ring), "
                         f"got {num_neighbours}")
    if not 2 <= threshold <= num_neighbours:
        raise ValueError(f"threshold must be in [2, num_neighbours={num_neighbours}], got {threshold}")
    if not 8 <= bits <= 62:
        raise ValueError(f"bits must be in [8, 62], got {bits}")
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}")
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be > 0 or null, got {max_weight}")
    return Params(threshold, num_neighbours, bits, float(clip_range), max_weight)


def sampling_of(cfg: RunConfig) -> Sampling:
    name = cfg.server.selection.name
    if name not in SAMPLING:
        raise ValueError(f"server.selection.name={name!r} chooses clients by what they report, so no privacy "
                         f"bound holds for it; use one of {sorted(SAMPLING)}")
    return Sampling(SAMPLING[name], cfg.clients.num_clients, cfg.server.clients_per_round)


def build_mechanism(cfg: RunConfig, on_client: bool = False) -> Mechanism | None:
    """`server.privacy`'s mechanism (None when off); ValueError naming the key. A client
    only clips, so `on_client` skips the accountant."""
    if cfg.server.privacy is None:
        return None
    run = Participation(sampling_of(cfg), cfg.server.rounds, account=not on_client)
    return PRIVACY.build_component("server.privacy", cfg.server.privacy, run)


def secagg_plus_defaults(clients_per_round: int) -> dict[str, int]:
    """SecAgg+'s `num_neighbours` and `threshold` when the config leaves them out, from
    the round's size, as Flower's SecAgg+ derives its shares and threshold from the
    clients sampled: Bell et al. (2020) need a neighbourhood of O(log n), so 2⌈log2 n⌉
    ring neighbours (at most n - 1, even, at least 2), and a majority of them, k/2 + 1,
    to reconstruct a client's secrets (fewer than half of a client's neighbours may drop)."""
    n = max(2, clients_per_round)
    most = max(2, (n - 1) // 2 * 2)
    neighbours = min(most, max(2, 2 * math.ceil(math.log2(n))))
    return {"num_neighbours": neighbours, "threshold": min(neighbours, neighbours // 2 + 1)}


def build_secure_params(cfg: RunConfig) -> Params | None:
    """`server.secure_aggregation`'s parameters (None when off), `secagg_plus`'s unset
    `num_neighbours`/`threshold` filled in by `secagg_plus_defaults`."""
    section = cfg.server.secure_aggregation
    if section is None:
        return None
    if section.name == "secagg_plus":
        args = {**secagg_plus_defaults(cfg.server.clients_per_round), **dict(section.args)}
        if "threshold" not in section.args and isinstance(args["num_neighbours"], int):
            args["threshold"] = max(2, min(args["num_neighbours"], args["num_neighbours"] // 2 + 1))
        section = dataclasses.replace(section, args=args)
    return SECURE_AGGREGATION.build_component("server.secure_aggregation", section)


def with_privacy(algorithm: Algorithm, cfg: RunConfig, on_client: bool = False) -> Algorithm:
    """The algorithm with the config's privacy pieces in place (unchanged without them)."""
    mechanism, secure = build_mechanism(cfg, on_client), build_secure_params(cfg)
    if mechanism is not None:
        algorithm = dataclasses.replace(
            algorithm,
            terms=(*algorithm.terms, mechanism.term),
            term_names=(*algorithm.term_names, "server.privacy (client-level DP)"),
            client_transforms=_prepend(mechanism.clip, algorithm.client_transforms),
            aggregator=mechanism.aggregator,
            server_transforms=_prepend(mechanism.noise, algorithm.server_transforms))
    if secure is not None:
        denominator = None if mechanism is None else float(mechanism.sampling.expected_clients)
        algorithm = dataclasses.replace(
            algorithm, aggregator=lambda num_params: SecureSum(num_params, secure, denominator))
    return algorithm


def _prepend(first, rest):
    """`first`, then the chain `rest` (its decoders kept)."""
    return chain(first, rest)
