"""Simulated malicious clients: what an attacker does to its update or to its data.

For robustness experiments and for testing the server's defences. An `Attack`
corrupts the honest update before the client's transform chain (`update`), or the
client's prepared training data before it trains (`data`: a poisoning attack).
Randomness comes from the round's context, so attacks are reproducible.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import AttackConfig
from fedray.types import Context


class Attack(NamedTuple):
    update: Callable[[np.ndarray, AttackConfig, Context], np.ndarray] | None = None
    """The update sent instead of the honest one."""
    data: Callable[[Any, AttackConfig, int], Any] | None = None
    """The prepared data trained on instead of the honest data (`num_classes` given)."""


ATTACKS: Registry[Callable[[], Attack]] = Registry("attack", returns=Attack)
"""`factory() -> Attack`, for `clients.attack.name`."""


@ATTACKS.register("nan")
def nan() -> Attack:
    """A numerically broken client (NaN everywhere)."""
    return Attack(update=lambda update, cfg, ctx: np.full_like(update, np.nan))


@ATTACKS.register("wrong_shape")
def wrong_shape() -> Attack:
    """A client running a different model: one parameter too few."""
    return Attack(update=lambda update, cfg, ctx: update[:-1].copy())


@ATTACKS.register("scale")
def scale() -> Attack:
    """Model-replacement style boosting: the update times `clients.attack.scale`."""
    return Attack(update=lambda update, cfg, ctx: update * np.float32(cfg.scale))


@ATTACKS.register("sign_flip")
def sign_flip() -> Attack:
    """Send the opposite direction (a classic Byzantine baseline)."""
    return Attack(update=lambda update, cfg, ctx: -update)


@ATTACKS.register("gaussian")
def gaussian() -> Attack:
    """Send N(0, std^2) noise instead of an update (Byzantine noise, `clients.attack.std`)."""

    def noise(update: np.ndarray, cfg: AttackConfig, ctx: Context) -> np.ndarray:
        return ctx.rng(0xA77).normal(0.0, cfg.std, size=update.shape).astype(np.float32)

    return Attack(update=noise)


@ATTACKS.register("label_flip")
def label_flip() -> Attack:
    """Data poisoning: train on label C - 1 - y instead of y (classification only)."""

    def flip(data: Any, cfg: AttackConfig, num_classes: int) -> Any:
        x, y = data
        if num_classes < 2:
            raise ValueError("clients.attack.name=label_flip needs a classification dataset")
        return x, (num_classes - 1) - y

    return Attack(data=flip)


@ATTACKS.register("backdoor")
def backdoor() -> Attack:
    """Data poisoning with a trigger: `clients.attack.fraction` of the examples get the
    trigger (`trigger`, `trigger_value`) and the label `target` (fedray.lifecycle.backdoor)."""

    def poison_data(data: Any, cfg: AttackConfig, num_classes: int) -> Any:
        from fedray.lifecycle.backdoor import poison  # torch: only where data is poisoned

        x, y = data
        return poison(x, y, cfg, num_classes)

    return Attack(data=poison_data)
