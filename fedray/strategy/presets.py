"""Named algorithms (`server.strategy.name`), each a function that builds its pieces.

As optax's `alias.py` builds optimizers from transforms, a preset is a function of
its hyper-parameters (`server.strategy.args`) returning a `Strategy`: the server
transform that turns the aggregated client update into a step on the global
weights, and the objective terms it adds to local training. The aggregated
(weighted-mean by default) client delta goes through the step and is added to the
global weights; FedAvg's step is the identity.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from fedray.config.registry import Registry
from fedray.strategy.terms import Term, proximal, scaffold as scaffold_term
from fedray.transforms import UpdateTransform, adagrad, adam, chain, identity, scale, yogi
from fedray.transforms import momentum as heavy_ball


class Strategy(NamedTuple):
    """A named algorithm's server step and the terms it adds to the clients' objective."""

    server: UpdateTransform
    terms: tuple[Term, ...] = ()


STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy", returns=Strategy)


def _step(server_lr: float) -> UpdateTransform:
    if not server_lr > 0:
        raise ValueError(f"server_lr must be > 0, got {server_lr}")
    return identity() if server_lr == 1.0 else scale(server_lr)


@STRATEGIES.register("fedavg")
def fedavg(server_lr: float = 1.0) -> Strategy:
    """McMahan et al. 2017: the new model is the example-weighted mean of the clients'."""
    return Strategy(_step(server_lr))


@STRATEGIES.register("fedavgm")
def fedavgm(server_lr: float = 1.0, momentum: float = 0.9) -> Strategy:
    """Server momentum on the mean delta (Hsu et al. 2019)."""
    return Strategy(chain(heavy_ball(momentum), scale(server_lr)))


@STRATEGIES.register("fedadam")
def fedadam(server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, eps: float = 1e-3) -> Strategy:
    """Server Adam on the mean delta (Reddi et al. 2021; bias-corrected as torch's Adam)."""
    return Strategy(adam(server_lr, beta1, beta2, eps))


@STRATEGIES.register("fedyogi")
def fedyogi(server_lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> Strategy:
    """Server Yogi on the mean delta (Reddi et al. 2021, Algorithm 2)."""
    return Strategy(yogi(server_lr, beta1, beta2, tau))


@STRATEGIES.register("fedadagrad")
def fedadagrad(server_lr: float = 0.01, beta1: float = 0.0, tau: float = 1e-3) -> Strategy:
    """Server Adagrad on the mean delta (Reddi et al. 2021, Algorithm 2)."""
    return Strategy(adagrad(server_lr, beta1, tau))


@STRATEGIES.register("fedprox")
def fedprox(mu: float = 0.01, server_lr: float = 1.0) -> Strategy:
    """FedAvg whose clients minimise loss + mu/2 ||w - w_global||^2 (Li et al. 2020)."""
    return Strategy(_step(server_lr), (proximal(mu),))


@STRATEGIES.register("scaffold")
def scaffold(server_lr: float = 1.0) -> Strategy:
    """SCAFFOLD (Karimireddy et al. 2020): control variates correct client drift; the
    global model moves by server_lr x the mean delta."""
    return Strategy(_step(server_lr), (scaffold_term(),))


@STRATEGIES.register("local")
def local() -> Strategy:
    """No federation: every tensor stays on its client (`fedray.personalization`), each
    client trains its own model from its kept state, and nothing is sent or aggregated.
    The baseline that shows what federation buys."""
    return Strategy(identity())
