"""Objective terms: what an algorithm adds to the clients' local objective, with its server half.

Some algorithms change local training, not only the server's step: FedProx adds
a proximal term, SCAFFOLD corrects every gradient with control variates that
travel both ways and live on both sides. A `Term` holds both halves as plain
functions with explicit state, so one factory and one registry entry add a whole
algorithm piece (knowledge transfer from a foundation model is one too,
`fedray.foundation.term`):

client half (state kept per client id, in the server's copy between rounds)
  `init_client(params) -> state`
  `objective(local, state) -> regularizer | None`: `regularizer(model, generator)`
      is added to every minibatch's loss
  `finish(local, state) -> (uplink payloads, state)`: after training; `local.delta`
      and `local.steps` are filled in

server half (state in the server's checkpoint)
  `init_server(params) -> state`
  `downlink(state, ctx) -> payloads`: named payloads broadcast with the round (each
      put into the object store once)
  `reducers(num_params) -> {name: Aggregator}`: how each uplink payload is combined
      over the round's clients (streamed, in client order)
  `absorb(state, combined, ctx) -> (state, metrics)`: fold the combined payloads in

Every function has a do-nothing default, so a term sets only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import numpy as np

from fedray.config.registry import Registry
from fedray.strategy.aggregate import Aggregator, WeightedMean
from fedray.types import ClientId, Context, ParamSpec

if TYPE_CHECKING:
    import torch

    from fedray.config.schema import TrainConfig

Regularizer = Callable[["torch.nn.Module", "torch.Generator"], "torch.Tensor"]


class LocalRound(NamedTuple):
    """What a term sees of one client's round."""

    model: "torch.nn.Module"
    spec: ParamSpec
    """The travelling parameters' layout (this client's rank, with LoRA)."""
    params: np.ndarray
    """The broadcast parameters local training started from (flat float32)."""
    payloads: Mapping[str, Any]
    """Everything broadcast to this client, by name."""
    ctx: Context
    train: "TrainConfig"
    task: Any = None
    public: Any = None
    """The public inputs (prepared for the model) when knowledge transfer is on."""
    delta: np.ndarray | None = None
    """After training: local parameters minus `params`."""
    steps: int = 0
    """After training: optimizer steps taken."""
    data: Any = None
    """The client's training data this round, as the task prepared it (after the data
    schedule's selection): what a term samples from (replay, Fisher information)."""


def _empty(params: np.ndarray) -> Any:
    return ()


class Term(NamedTuple):
    """Both halves of an objective term; see the module docstring."""

    init_client: Callable[[np.ndarray], Any] = _empty
    objective: Callable[[LocalRound, Any], Regularizer | None] = lambda local, state: None
    finish: Callable[[LocalRound, Any], "tuple[dict[str, Any], Any]"] = lambda local, state: ({}, state)
    init_server: Callable[[np.ndarray], Any] = _empty
    downlink: Callable[[Any, Context], "dict[str, Any]"] = lambda state, ctx: {}
    reducers: Callable[[int], "dict[str, Aggregator]"] = lambda num_params: {}
    absorb: Callable[[Any, "dict[str, Any]", Context], "tuple[Any, dict[str, float]]"] = (
        lambda state, combined, ctx: (state, {}))
    layout_bound: bool = False
    """Its payloads have the travelling parameters' shape, so every client must train
    the same layout (no mixed LoRA ranks, no stacking)."""
    plain_sgd: bool = False
    """Its client half reads the local steps as plain SGD steps of `train.lr` (SCAFFOLD's
    control update), so the clients' optimizer must be SGD without momentum."""


TERMS: Registry[Callable[..., Term]] = Registry("objective term", returns=Term)
"""`factory(**args) -> Term`, for `clients.objective`."""


def _as_tensors(local: LocalRound, flat: np.ndarray) -> list[tuple["torch.Tensor", "torch.Tensor"]]:
    """(model parameter, the matching slice of `flat` as a tensor on its device) pairs,
    for the travelling tensors that are parameters."""
    import torch

    named = dict(local.model.named_parameters())  # batch-norm statistics travel too, but take no gradient
    views = local.spec.unflatten(flat)
    return [(named[n], torch.as_tensor(np.array(views[n]), device=named[n].device))
            for n in local.spec.names if n in named]


@TERMS.register("proximal")
def proximal(mu: float = 0.01) -> Term:
    """FedProx (Li et al., MLSys 2020): mu/2 * ||w - w_global||^2 keeps local models near
    the broadcast one, which bounds client drift on non-IID data."""
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")

    def objective(local: LocalRound, state: Any):
        if mu == 0:
            return None
        anchors = _as_tensors(local, local.params)

        def term(model, generator):
            return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in anchors)

        return term

    return Term(objective=objective)


class UniformMean:
    """The unweighted mean over clients (SCAFFOLD averages control deltas per client)."""

    def __init__(self, num_params: int):
        self.mean = WeightedMean(num_params)

    @property
    def num_added(self) -> int:
        return self.mean.num_added

    def init(self) -> Any:
        return ()

    def reset(self, state: Any = ()) -> None:
        self.mean.reset()

    def add(self, client_id: ClientId, weight: float, update: np.ndarray) -> None:
        self.mean.add(client_id, 1.0, update)

    def result(self) -> tuple[np.ndarray, Any]:
        return self.mean.result()


def sgd_step_sum(steps: int, momentum: float) -> float:
    """How many gradients' worth of lr heavy-ball SGD moves in `steps` steps from a zero
    buffer (PyTorch's SGD: b_k = β b_(k-1) + g_k, w -= lr b_k), for a constant gradient:
    Σ_(i=1..K) (1 - β^i) / (1 - β). `steps` itself without momentum."""
    if momentum == 0:
        return float(steps)
    return float(sum((1 - momentum ** i) / (1 - momentum) for i in range(1, steps + 1)))


@TERMS.register("scaffold")
def scaffold() -> Term:
    """SCAFFOLD's control variates (Karimireddy et al., ICML 2020), option II.

    The server keeps c and broadcasts it as `control`; client i keeps c_i (zeros at
    first), trains on the corrected gradient g + c - c_i (the linear term
    <w, c - c_i>), then sets c_i+ = c_i - c + (x - y_i) / (K lr) with K its optimizer
    steps, and returns `control_delta` = c_i+ - c_i. The server adds
    (|S| / N) x the mean of the control deltas to c.

    (x - y_i) / lr is the sum of the steps the client took; with SGD momentum β each
    gradient moves the weights by more than lr, so K becomes `sgd_step_sum(K, β)`: the
    step the clients really took, exact for a constant gradient (plain SGD: K itself).
    Adaptive client optimizers, and momentum carried over between rounds, have no such
    form and are refused (`fedray.strategy.algorithm.plain_sgd_problem`).
    """

    def init(params: np.ndarray) -> np.ndarray:
        return np.zeros_like(params, dtype=np.float32)

    def objective(local: LocalRound, c_i: np.ndarray):
        correction = _as_tensors(local, np.asarray(local.payloads["control"]) - c_i)

        def term(model, generator):
            return sum((p * c).sum() for p, c in correction)

        return term

    def finish(local: LocalRound, c_i: np.ndarray):
        c = np.asarray(local.payloads["control"], dtype=np.float32)
        steps = sgd_step_sum(max(1, local.steps), local.train.momentum)
        new = c_i - c - local.delta / np.float32(steps * local.train.lr)
        return {"control_delta": (new - c_i).astype(np.float32)}, new.astype(np.float32)

    def absorb(c: np.ndarray, combined: dict, ctx: Context):
        share = ctx.num_aggregated / max(1, ctx.num_clients)
        return c + np.float32(share) * combined["control_delta"], {}

    return Term(init_client=init, objective=objective, finish=finish, init_server=init,
                downlink=lambda c, ctx: {"control": c},
                reducers=lambda num_params: {"control_delta": UniformMean(num_params)},
                absorb=absorb, layout_bound=True, plain_sgd=True)
