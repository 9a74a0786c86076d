"""Simulated malicious clients: functions that corrupt an honest update.

For robustness experiments and for testing the server's defences. An attack
maps the honest flat update to what the attacker sends instead.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import AttackConfig

Attack = Callable[[np.ndarray, AttackConfig], np.ndarray]
ATTACKS: Registry[Attack] = Registry("attack")


@ATTACKS.register("nan")
def nan(update: np.ndarray, cfg: AttackConfig) -> np.ndarray:
    """A numerically broken client (NaN everywhere)."""
    return np.full_like(update, np.nan)


@ATTACKS.register("wrong_shape")
def wrong_shape(update: np.ndarray, cfg: AttackConfig) -> np.ndarray:
    """A client running a different model: one parameter too few."""
    return update[:-1].copy()


@ATTACKS.register("scale")
def scale(update: np.ndarray, cfg: AttackConfig) -> np.ndarray:
    """Model-replacement style boosting: the update times `scale`."""
    return update * np.float32(cfg.scale)


@ATTACKS.register("sign_flip")
def sign_flip(update: np.ndarray, cfg: AttackConfig) -> np.ndarray:
    """Send the opposite direction (a classic Byzantine baseline)."""
    return -update
