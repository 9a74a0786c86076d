"""LoRA adapter state: which rank each client trains, and moving adapters between ranks.

A flat adapter vector (the `ParamSpec` order of a PEFT model's trainable
tensors) holds, per adapted module, A (r x d_in) and B (d_out x r). Its update
to the module's weight is `scaling * B @ A`, a sum of r rank-one components.
Every rank uses the same scaling (alpha / r of the global adapter), so the
leading r_c components of a rank-r adapter are a valid rank-r_c adapter:
`truncate` sends a client its rank, `pad` puts its update back (HetLoRA), and
`stack` concatenates several adapters into one whose B @ A is the weighted sum
of theirs (FLoRA), which `fold` adds to the frozen base weights.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from fedray.config.registry import Registry
from fedray.config.schema import PeftConfig
from fedray.types import ParamSpec

if TYPE_CHECKING:
    import torch

_LORA_NAME = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])\.(?P<adapter>[^.]+)\.weight$")


# ---- building adapters --------------------------------------------------------------


def adapter_name(rank: int, peft: PeftConfig) -> str:
    """PEFT's name for the adapter of a rank: `default` for the global rank."""
    return "default" if rank == peft.r else f"rank{rank}"


def lora_config(peft: PeftConfig, rank: int):
    """A `peft.LoraConfig` of `rank` whose scaling equals the global adapter's."""
    from peft import LoraConfig

    return LoraConfig(
        r=rank,
        lora_alpha=peft.alpha * rank / peft.r,
        lora_dropout=peft.dropout,
        target_modules=list(peft.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model: "torch.nn.Module", peft: PeftConfig, rank: int | None = None) -> "torch.nn.Module":
    """Wrap `model` with a LoRA adapter (of the global rank by default) named
    `default`; the base weights are frozen."""
    from peft import get_peft_model

    try:
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            return get_peft_model(model, lora_config(peft, rank or peft.r))
    except ValueError as err:
        raise ValueError(f"model.peft.target_modules={list(peft.target_modules)}: {err}") from None


class RankedAdapters:
    """One adapter per rank that an actor's clients train, over one shared base model.

    A pool actor hosts clients of several ranks; each gets a real PEFT adapter of
    its rank, and `activate` makes it the one that runs and trains. Adapters named
    in `keep` (a client's personal one) stay active beside it and out of its
    layout: they never travel.
    """

    def __init__(self, model: "torch.nn.Module", peft: PeftConfig, ranks: Iterable[int],
                 keep: tuple[str, ...] = ()):
        from fedray.models.flat import param_spec  # torch: only where models live

        self.model, self.peft, self.keep = model, peft, keep
        self.specs: dict[int, ParamSpec] = {}
        for rank in sorted(set(ranks) | {peft.r}):
            if rank != peft.r:
                model.add_adapter(adapter_name(rank, peft), lora_config(peft, rank))
            self._set(rank)
            self.specs[rank] = param_spec(model, exclude=frozenset(
                n for n in param_spec(model).names if any(f".{k}." in n for k in keep)))
        self._set(peft.r)

    def _set(self, rank: int) -> None:
        if self.keep:
            self.model.base_model.set_adapter([adapter_name(rank, self.peft), *self.keep])
        else:
            self.model.set_adapter(adapter_name(rank, self.peft))

    def activate(self, rank: int) -> ParamSpec:
        """Make the rank's adapter the active, trainable one (with those in `keep`); its flat layout."""
        self._set(rank)
        return self.specs[rank]


# ---- which rank each client trains ----------------------------------------------------

RankRule = Callable[[PeftConfig, np.ndarray], np.ndarray]
RANK_RULES: Registry[RankRule] = Registry("rank rule")


@RANK_RULES.register("uniform")
def uniform_ranks(peft: PeftConfig, num_examples: np.ndarray) -> np.ndarray:
    """Every client trains the global rank `r`."""
    return np.full(len(num_examples), peft.r, dtype=np.int64)


@RANK_RULES.register("round_robin")
def round_robin_ranks(peft: PeftConfig, num_examples: np.ndarray) -> np.ndarray:
    """Client c trains rank_tiers[c % len(rank_tiers)]."""
    tiers = _tiers(peft, "round_robin")
    return tiers[np.arange(len(num_examples)) % len(tiers)]


@RANK_RULES.register("by_examples")
def ranks_by_examples(peft: PeftConfig, num_examples: np.ndarray) -> np.ndarray:
    """Clients sorted by training-set size fill the tiers in equal groups, smallest
    first: more data stands for a more capable client, as in HetLoRA's setups."""
    tiers = np.sort(_tiers(peft, "by_examples"))
    order = np.argsort(num_examples, kind="stable")
    ranks = np.empty(len(num_examples), dtype=np.int64)
    for tier, members in zip(tiers, np.array_split(order, len(tiers))):
        ranks[members] = tier
    return ranks


def _tiers(peft: PeftConfig, rule: str) -> np.ndarray:
    if not peft.rank_tiers:
        raise ValueError(f"model.peft.rank_rule={rule} needs model.peft.rank_tiers, e.g. [2, 4, 8]")
    return np.asarray(peft.rank_tiers, dtype=np.int64)


def client_ranks(peft: PeftConfig, num_examples: np.ndarray) -> np.ndarray:
    """The rank of every client: `model.peft.client_ranks` if given, else the rule."""
    if peft.client_ranks:
        return np.asarray(peft.client_ranks, dtype=np.int64)
    return RANK_RULES.build(peft.rank_rule, peft, np.asarray(num_examples))


# ---- moving adapters between ranks ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: where it sits and its input and output widths."""

    path: str
    """The adapted module's name in the PEFT model (e.g. `...self_attn.q_proj`)."""
    d_in: int
    d_out: int


@dataclasses.dataclass(frozen=True)
class LoraLayout:
    """The adapted modules of a flat adapter vector, in `ParamSpec` order (A then B)."""

    modules: tuple[LoraModule, ...]
    rank: int
    scaling: float
    """alpha / r of the global adapter, shared by every rank."""

    @property
    def size_per_rank(self) -> int:
        """Floats one rank-one component takes in every module together."""
        return sum(m.d_in + m.d_out for m in self.modules)

    def num_params(self, rank: int | None = None) -> int:
        """Floats in a flat adapter of `rank` (the layout's own by default)."""
        return (self.rank if rank is None else rank) * self.size_per_rank

    def rank_of(self, flat: np.ndarray) -> int:
        """The rank of a flat adapter in this layout, read from its length."""
        rank, rest = divmod(flat.size, self.size_per_rank)
        assert rest == 0, (flat.size, self.size_per_rank)
        return rank

    def factors(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(A [r, d_in], B [d_out, r]) views for every module of a flat adapter."""
        rank, out, offset = self.rank_of(flat), [], 0
        for m in self.modules:
            a = flat[offset : offset + rank * m.d_in].reshape(rank, m.d_in)
            offset += rank * m.d_in
            b = flat[offset : offset + m.d_out * rank].reshape(m.d_out, rank)
            offset += m.d_out * rank
            out.append((a, b))
        return out

    def assemble(self, factors: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The flat vector of per-module (A, B) factors (inverse of `factors`)."""
        parts = [p for a, b in factors for p in (a.reshape(-1), b.reshape(-1))]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def truncate(self, flat: np.ndarray, rank: int) -> np.ndarray:
        """The leading `rank` components: the adapter a rank-`rank` client trains."""
        return self.assemble([(a[:rank], b[:, :rank]) for a, b in self.factors(flat)])

    def pad(self, flat: np.ndarray, rank: int) -> np.ndarray:
        """Zero-extend a lower-rank adapter (or update) to `rank` components."""
        padded = []
        for a, b in self.factors(flat):
            pa = np.zeros((rank, a.shape[1]), dtype=np.float32)
            pb = np.zeros((b.shape[0], rank), dtype=np.float32)
            pa[: a.shape[0]], pb[:, : b.shape[1]] = a, b
            padded.append((pa, pb))
        return self.assemble(padded)

    def concat(self, adapters: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
        """One adapter whose B @ A is sum_k w_k B_k @ A_k (w_k = 1 if not given).

        A_k are stacked as rows and w_k B_k as columns: the ranks add up and the
        product is exact.
        """
        weights = [1.0] * len(adapters) if weights is None else weights
        per_adapter = [(np.float32(w), self.factors(flat)) for w, flat in zip(weights, adapters)]
        stacked = []
        for i in range(len(self.modules)):
            a = np.concatenate([f[i][0] for _, f in per_adapter], axis=0)
            b = np.concatenate([w * f[i][1] for w, f in per_adapter], axis=1)
            stacked.append((a, b))
        return self.assemble(stacked)

    def stack(self, adapters: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
        """FLoRA's noise-free aggregation: `concat` with the weights normalised to 1."""
        total = sum(w for w, _ in adapters)
        return self.concat([flat for _, flat in adapters], [w / total for w, _ in adapters])

    def deltas(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The weight update of every module, `scaling * B @ A` [d_out, d_in]."""
        return {
            m.path: (self.scaling * (b.astype(np.float64) @ a.astype(np.float64))).astype(np.float32)
            for m, (a, b) in zip(self.modules, self.factors(flat))
        }


def lora_layout(spec: ParamSpec, peft: PeftConfig) -> LoraLayout:
    """The layout of a PEFT model's flat adapter vector; every tensor must be LoRA's."""
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    order: list[str] = []
    for name, shape in zip(spec.names, spec.shapes):
        match = _LORA_NAME.match(name)
        if match is None:
            raise ValueError(f"{name} is not a LoRA A or B weight; only adapters may train")
        module = match["module"]
        if module not in shapes:
            order.append(module)
        shapes.setdefault(module, {})[match["factor"]] = shape
    modules, rank = [], None
    for path in order:
        a, b = shapes[path]["A"], shapes[path]["B"]
        assert rank in (None, a[0]) and b[1] == a[0], (path, a, b)
        rank = a[0]
        modules.append(LoraModule(path, d_in=a[1], d_out=b[0]))
    expected = [n for m in modules for n in (f"{m.path}.lora_A", f"{m.path}.lora_B")]
    assert [n.rsplit(".", 2)[0] for n in spec.names] == expected, "A must precede B in each module"
    return LoraLayout(tuple(modules), int(rank), peft.alpha / peft.r)


# ---- folding exact updates into the base weights (FLoRA) -------------------------------


def fold(model: "torch.nn.Module", layout: LoraLayout, flat: np.ndarray) -> None:
    """Add `scaling * B @ A` of a (stacked) adapter to the adapted modules' base weights."""
    import torch

    from fedray.models.flat import as_tensor

    with torch.no_grad():
        for module_path, delta in layout.deltas(flat).items():
            module = model.get_submodule(module_path)
            weight = module.get_base_layer().weight
            update = as_tensor(delta)
            if getattr(module, "fan_in_fan_out", False):
                update = update.T
            weight += update.to(weight.device, weight.dtype)


class FoldedMerges:
    """How many of the run's per-round stacked updates a model's base already holds.

    The server and every client actor keep their base in step with the list the
    server broadcasts, folding each entry exactly once, in order.
    """

    def __init__(self) -> None:
        self.count = 0

    def catch_up(
        self,
        model: "torch.nn.Module",
        layout: LoraLayout,
        merges: Sequence,
        fetch: Callable[[list], list] = list,
    ) -> int:
        """Fold `merges[count:]` (fetched with `fetch`, e.g. `ray.get`); bytes folded."""
        new = fetch(list(merges[self.count :])) if len(merges) > self.count else []
        for flat in new:
            fold(model, layout, flat)
        self.count += len(new)
        return sum(int(f.nbytes) for f in new)
