"""Methods against forgetting, as algorithm pieces: `ewc` and `replay` (client objective
terms, their memory kept per client id) and `task_anchor` (a server transform).

`naive` continual learning is no method at all: clients simply train on their
current task. Each method reads the task from `Context.task` (the data schedule's)
and keeps what it remembers in its returned state, which the server holds in every
checkpoint, so a resumed or restarted run remembers exactly what an uninterrupted
one would.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fedray.strategy.terms import TERMS, LocalRound, Term
from fedray.transforms import TRANSFORMS, UpdateTransform
from fedray.types import Context

_EMPTY = np.zeros(0, dtype=np.float32)
_FISHER_TAG, _REPLAY_PICK_TAG, _REPLAY_DRAW_TAG = 0xF15E, 0x4E91, 0x4E92


# ---- rows of prepared data (a tensor, or a tuple of tensors such as (x, y)) -------


def _num_rows(data: Any) -> int:
    return int((data[0] if isinstance(data, (tuple, list)) else data).shape[0])


def _take(data: Any, index: Any) -> Any:
    if isinstance(data, (tuple, list)):
        return tuple(t[index] for t in data)
    return data[index]


def _to_numpy(data: Any) -> Any:
    if isinstance(data, (tuple, list)):
        return tuple(_to_numpy(t) for t in data)
    return data.detach().to("cpu").numpy().copy()


def _to_torch(rows: Any, device) -> Any:
    import torch

    if isinstance(rows, tuple):
        return tuple(_to_torch(r, device) for r in rows)
    return torch.as_tensor(rows, device=device)


def _concat(parts: list) -> Any:
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(column) for column in zip(*parts))
    return np.concatenate(parts)


def _torch_generator(ctx: Context, tag: int):
    import torch

    return torch.Generator().manual_seed(int(ctx.rng(tag).integers(2**62)))


# ---- EWC ---------------------------------------------------------------------------


class EwcState(NamedTuple):
    """A client's EWC memory."""

    task: int
    """The task of the client's last round (-1 before its first)."""
    fisher: np.ndarray
    """Diagonal Fisher information measured at the end of that round, on its data."""
    anchor: np.ndarray
    """theta*: the global model the client received on its first round of its current
    task (the federation's model at the end of the previous task, as far as this
    client knows); empty before its task first changed."""
    importance: np.ndarray
    """The Fisher information of past tasks, summed (older ones times `decay`)."""


def _consolidated(state: EwcState, local: LocalRound, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """(anchor, importance) for this round: on the first round of a new task, the last
    round's Fisher joins the importance and the global model received now becomes the
    anchor. (A client's own last model of the old task would be older still for a client
    last picked early in that task: measured, it forgets more.)"""
    if state.task < 0 or local.ctx.task == state.task:
        return state.anchor, state.importance
    previous = state.importance if state.importance.size else np.zeros_like(state.fisher)
    return np.array(local.params, dtype=np.float32), (np.float32(decay) * previous + state.fisher)


def fisher_diagonal(local: LocalRound, num_batches: int) -> np.ndarray:
    """Mean squared minibatch gradient of the task loss, per travelling parameter (the
    empirical Fisher with minibatch gradients: cheap, and what EWC weighs by)."""
    import torch

    named = dict(local.model.named_parameters())
    params = [named[n] for n in local.spec.names if n in named]  # batch-norm statistics: no gradient
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    generator = _torch_generator(local.ctx, _FISHER_TAG)
    seen = 0
    with torch.enable_grad():
        for batch in local.task.batches(local.data, local.train.batch_size, generator):
            grads = torch.autograd.grad(local.task.loss(local.model, batch), params, allow_unused=True)
            for acc, grad in zip(total, grads):
                if grad is not None:
                    acc += grad.detach().float() ** 2
            seen += 1
            if seen >= num_batches:
                break
    by_name = dict(zip([n for n in local.spec.names if n in named], total))
    total = [by_name[n] if n in by_name else torch.zeros(shape) for n, shape in zip(local.spec.names, local.spec.shapes)]
    flat = np.concatenate([t.reshape(-1).cpu().numpy() for t in total]) if total else _EMPTY
    return (flat / max(1, seen)).astype(np.float32)


@TERMS.register("ewc")
def ewc(lam: float = 1e6, fisher_batches: int = 8, decay: float = 1.0) -> Term:
    """Elastic weight consolidation (Kirkpatrick et al., PNAS 2017) per client: the loss
    gains lam/2 * sum F (theta - theta*)^2, so weights that mattered for past tasks
    (high Fisher information F) stay near theta*, the model at the end of those tasks.
    The stiffness lam x F is capped at 1 / train.lr: beyond it a plain gradient step on
    the penalty overshoots and local training diverges, so a large lam saturates the
    important weights instead of blowing up. `decay` < 1 is online EWC (Schwarz et al.
    2018): older tasks weigh less."""
    if lam < 0 or fisher_batches < 1 or not 0 < decay <= 1:
        raise ValueError(f"ewc needs lam >= 0, fisher_batches >= 1, 0 < decay <= 1; got "
                         f"lam={lam}, fisher_batches={fisher_batches}, decay={decay}")

    def init(params: np.ndarray) -> EwcState:
        return EwcState(-1, _EMPTY, _EMPTY, _EMPTY)

    def objective(local: LocalRound, state: EwcState):
        anchor, importance = _consolidated(state, local, decay)
        if importance.size == 0 or lam == 0:
            return None
        import torch

        named = dict(local.model.named_parameters())
        # stiffness lam x F, capped where a plain gradient step would overshoot (1 / lr)
        stiffness = np.minimum(np.float32(lam) * importance, np.float32(1.0 / local.train.lr))
        pairs = []
        for name, a, k in zip(local.spec.names, local.spec.unflatten(anchor).values(),
                              local.spec.unflatten(stiffness).values()):
            if name not in named:  # a batch-norm statistic: no gradient to hold it back
                continue
            device = named[name].device
            pairs.append((named[name], torch.as_tensor(a, device=device), torch.as_tensor(k, device=device)))

        def penalty(model, generator):
            return 0.5 * sum((k * (p - a) ** 2).sum() for p, a, k in pairs)

        return penalty

    def finish(local: LocalRound, state: EwcState):
        anchor, importance = _consolidated(state, local, decay)
        return {}, EwcState(local.ctx.task, fisher_diagonal(local, fisher_batches), anchor, importance)

    return Term(init_client=init, objective=objective, finish=finish)


# ---- replay ------------------------------------------------------------------------


class ReplayState(NamedTuple):
    """A client's replay buffer: a random sample of each task's rows it trained on."""

    tasks: tuple[int, ...]
    rows: tuple[Any, ...]
    """Per task, its rows as numpy arrays in the task's data layout (e.g. (x, y))."""

    @property
    def num_rows(self) -> int:
        return sum(_num_rows(r) for r in self.rows)


@TERMS.register("replay")
def replay(buffer_size: int = 64, weight: float = 1.0) -> Term:
    """Experience replay: each client keeps up to `buffer_size` examples, shared equally
    among the tasks it has seen, and adds `weight` x the loss on a minibatch drawn from
    past tasks' examples to every step. The buffer is the client's kept state: it never
    leaves the client in a real deployment and costs no bytes on the wire."""
    if buffer_size < 1 or weight < 0:
        raise ValueError(f"replay needs buffer_size >= 1 and weight >= 0; got {buffer_size}, {weight}")

    def init(params: np.ndarray) -> ReplayState:
        return ReplayState((), ())

    def objective(local: LocalRound, state: ReplayState):
        past = [rows for task, rows in zip(state.tasks, state.rows) if task != local.ctx.task and _num_rows(rows)]
        if not past or weight == 0:
            return None
        import torch

        device = next(local.model.parameters()).device
        memory = _to_torch(_concat(past), device)
        size = _num_rows(memory)
        draws = _torch_generator(local.ctx, _REPLAY_DRAW_TAG)

        def loss(model, generator):
            index = torch.randint(size, (min(size, local.train.batch_size),), generator=draws).to(device)
            return weight * local.task.loss(model, _take(memory, index))

        return loss

    def finish(local: LocalRound, state: ReplayState):
        kept = dict(zip(state.tasks, state.rows))
        quota = buffer_size // len(set(kept) | {local.ctx.task})
        n = _num_rows(local.data)
        pick = local.ctx.rng(_REPLAY_PICK_TAG).choice(n, size=min(quota, n), replace=False)
        kept[local.ctx.task] = _to_numpy(_take(local.data, _index(pick, local.data)))
        tasks = tuple(sorted(kept))
        return {}, ReplayState(tasks, tuple(_take(kept[t], slice(0, quota)) for t in tasks))

    return Term(init_client=init, objective=objective, finish=finish)


def _index(pick: np.ndarray, data: Any):
    import torch

    first = data[0] if isinstance(data, (tuple, list)) else data
    return torch.as_tensor(pick, dtype=torch.long, device=first.device)


# ---- server side -------------------------------------------------------------------


class AnchorState(NamedTuple):
    task: int
    """The federation's task when the anchor was taken."""
    anchor: np.ndarray
    """The global model at the end of the previous task; empty during the first task."""


@TRANSFORMS.register("task_anchor")
def task_anchor(strength: float = 0.2) -> UpdateTransform:
    """Server-side regularisation towards the previous task's global model: from the
    first round of each new task the step becomes u - strength x (theta + u - theta*),
    theta* the global model when the task changed, so each round's new model is pulled
    that share of the way back towards what served the past tasks."""
    if not 0 <= strength < 1:
        raise ValueError(f"strength must be in [0, 1), got {strength}")

    def init(params: np.ndarray) -> AnchorState:
        return AnchorState(0, _EMPTY)

    def apply(update: np.ndarray, state: AnchorState, params: np.ndarray, ctx: Context):
        if ctx.task > state.task:
            state = AnchorState(ctx.task, np.array(params, dtype=np.float32))
        if state.anchor.size == 0 or strength == 0:
            return update, state
        pulled = update - np.float32(strength) * (params + update - state.anchor)
        return pulled.astype(np.float32), state

    return UpdateTransform(init, apply)
