"""Content-aware compression: a codec per tensor group, by rule or chosen from measurements.

The idea of content-oriented compression (arXiv 2207.14168) is that different
content deserves different strategies. An update's tensors differ the same way:
norms and biases are few and sensitive (fp16), embeddings are large and sparse
in what changes (top-k with error feedback), attention projections are dense
(int8), and LoRA's A and B factors differ in shape and scale. Two codecs:

- `content`: `rules: [{match: regex, codec: {name, args}}, ...]`; each tensor
  goes to the first rule whose regex matches its name (`re.search`), the rest to
  `default`. The tensors of one rule form a group, encoded as one vector.
- `content_auto`: groups by kind (`tensor_kind`: LoRA A, LoRA B, norm, bias,
  embedding, attention, weight); on a client's first update, every candidate
  codec encodes every group, and the choice minimises the total squared error
  within `budget` (a share of float32's bytes): from the least-error choice, the
  group and cheaper codec that add the least error per byte saved are taken
  until the update fits (the greedy solution of the multiple-choice knapsack).
  The choice is the client's kept state, so later rounds reuse it.

Names come from the `ParamSpec` in the context (`ctx.spec`, the client's own
layout). Each group's part of the payload names its codec and its tensors'
(offset, size), so the server decodes without knowing the layout. Each group's
codec keeps its own state (error-feedback residual) and draws its randomness from
a context re-seeded for the group.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Sequence

import numpy as np

from fedray.compress.codec import CODECS, Encoded, check_fraction, expect
from fedray.config.sections import ComponentConfig
from fedray.transforms import UpdateTransform
from fedray.types import Context, ParamSpec

KINDS = ("lora_A", "lora_B", "norm", "bias", "embedding", "attention", "weight")
_ATTENTION = re.compile(r"(^|[._])(q_proj|k_proj|v_proj|o_proj|qkv|query|key|value|attn|attention)([._]|$)")
DEFAULT_CANDIDATES = ({"name": "fp16"}, {"name": "int8"}, *({"name": "gain", "args": {"rate": r}} for r in
                                                            (0.75, 0.5, 0.25, 0.0)),
                      {"name": "top_k", "args": {"fraction": 0.01}})


def tensor_kind(name: str, shape: Sequence[int]) -> str:
    """What a tensor is, from its name and shape (one of `KINDS`)."""
    lower = name.lower()
    for kind in ("lora_A", "lora_B"):
        if kind.lower() in lower:
            return kind
    if len(shape) < 2:
        return "norm" if "norm" in lower or re.search(r"(^|\.)ln", lower) else "bias"
    if "embed" in lower or "wte" in lower or "lm_head" in lower:
        return "embedding"
    return "attention" if _ATTENTION.search(lower) else "weight"


@dataclasses.dataclass(frozen=True)
class Part(Encoded):
    codec: int
    """Index of the group's codec (rule, or candidate)."""
    segments: np.ndarray
    """int32 (tensors, 2): offset and size of each of the group's tensors."""
    payload: Any


@dataclasses.dataclass(frozen=True)
class ContentPayload(Encoded):
    parts: tuple


def _build(key: str, spec: Any) -> UpdateTransform:
    if not isinstance(spec, Mapping) or "name" not in spec or set(spec) - {"name", "args"}:
        raise ValueError(f"{key} must be {{name, args}}, got {spec!r}")
    if spec["name"] in ("content", "content_auto"):
        raise ValueError(f"{key}: content codecs do not nest")
    if (spec.get("args") or {}).get("rate") == "auto":
        raise ValueError(f"{key}: rate: auto sizes the whole update; inside content rules give a fixed rate")
    transform = CODECS.build_component(key, ComponentConfig(spec["name"], dict(spec.get("args") or {})))
    if transform.decode is None:
        raise ValueError(f"{key}: codec '{spec['name']}' has no decode")
    return transform


def _groups(spec: ParamSpec | None, size: int, assign) -> list[tuple[int, np.ndarray, ParamSpec]]:
    """(codec index, segments, sub-spec) per non-empty group, in codec-index order."""
    if spec is None or spec.num_params != size:
        raise ValueError("content codecs need the update's tensor layout (ctx.spec) to group tensors by name")
    members: dict[int, list[int]] = {}
    for i, (name, shape) in enumerate(zip(spec.names, spec.shapes)):
        members.setdefault(assign(name, shape), []).append(i)
    out = []
    for codec in sorted(members):
        idx = members[codec]
        segments = np.array([(spec.offsets[i], spec.sizes[i]) for i in idx], dtype=np.int32).reshape(-1, 2)
        out.append((codec, segments, ParamSpec(tuple(spec.names[i] for i in idx), tuple(spec.shapes[i] for i in idx))))
    return out


def _first(segments: np.ndarray) -> int:
    return int(segments[0, 0]) if len(segments) else 0


def _gather(x: np.ndarray, segments: np.ndarray) -> np.ndarray:
    return np.concatenate([x[o : o + n] for o, n in segments.tolist()]) if len(segments) else x[:0]


def group_context(ctx: Context, codec: int, offset: int, spec: ParamSpec | None = None) -> Context:
    """The context a group's codec sees: its own tensors, its own random stream (from the
    codec and the group's first offset, which the server reads from the payload)."""
    seed = int(np.random.SeedSequence([ctx.seed, 0xC047E47, codec, offset]).generate_state(1)[0])
    return dataclasses.replace(ctx, seed=seed, spec=spec)


def _decoder(codecs: Sequence[UpdateTransform]):
    def decode(payload, ctx: Context) -> np.ndarray:
        parts = expect(payload, ContentPayload).parts
        total = sum(int(p.segments[:, 1].sum()) for p in parts)
        out = np.zeros(total, dtype=np.float32)
        for part in parts:
            if not 0 <= part.codec < len(codecs):
                raise ValueError(f"codec index {part.codec} out of range")
            sub_ctx = group_context(ctx, part.codec, _first(part.segments))
            values, at = codecs[part.codec].decode(part.payload, sub_ctx), 0
            if values.size != int(part.segments[:, 1].sum()):
                raise ValueError("a group's decoded size does not match its segments")
            for offset, size in part.segments.tolist():
                if offset < 0 or offset + size > total:
                    raise ValueError(f"segment ({offset}, {size}) outside an update of {total}")
                out[offset : offset + size] = values[at : at + size]
                at += size
        return out

    return decode


def _encode_groups(codecs, groups, choice, states, update, params, ctx):
    parts, new_states = [], []
    for (key, segments, sub_spec), state in zip(groups, states):
        codec = choice[key]
        sub_ctx = group_context(ctx, codec, _first(segments), sub_spec)
        payload, state = codecs[codec].apply(_gather(update, segments), state, _gather(params, segments), sub_ctx)
        parts.append(Part(codec, segments, payload))
        new_states.append(state)
    return ContentPayload(tuple(parts)), tuple(new_states)


@CODECS.register("content")
def content(rules: list, default: dict | None = None) -> UpdateTransform:
    """A codec per rule-matched tensor group; unmatched tensors use `default` (`none`)."""
    if not isinstance(rules, Sequence) or isinstance(rules, str):
        raise ValueError(f"rules must be a list of {{match, codec}}, got {rules!r}")
    patterns, codecs = [], []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or set(rule) != {"match", "codec"}:
            raise ValueError(f"rules[{i}] must have exactly 'match' and 'codec', got {rule!r}")
        try:
            patterns.append(re.compile(rule["match"]))
        except (re.error, TypeError) as err:
            raise ValueError(f"rules[{i}].match {rule['match']!r} is not a regular expression: {err}") from None
        codecs.append(_build(f"rules[{i}].codec", rule["codec"]))
    codecs.append(_build("default", default or {"name": "none"}))

    def assign(name: str, shape) -> int:
        return next((i for i, p in enumerate(patterns) if p.search(name)), len(patterns))

    def init(params: np.ndarray):
        return None  # built on the first update, when the layout is known

    def apply(update: np.ndarray, state, params: np.ndarray, ctx: Context):
        groups = _groups(ctx.spec, update.size, assign)
        if state is None:
            state = tuple(codecs[key].init(_gather(params, seg)) for key, seg, _ in groups)
        identity = {key: key for key, _, _ in groups}
        return _encode_groups(codecs, groups, identity, state, update, params, ctx)

    return UpdateTransform(init, apply, _decoder(codecs))


def unmatched_rules(rules: Sequence[Mapping], spec: ParamSpec) -> list[str]:
    """The rules whose regex matches no tensor name of `spec` (config check)."""
    return [f"rules[{i}].match {rule['match']!r} matches no tensor (names: {', '.join(spec.names[:6])}"
            f"{', ...' if len(spec.names) > 6 else ''})"
            for i, rule in enumerate(rules) if not any(re.search(rule["match"], n) for n in spec.names)]


# ---- auto: the codec with the least error per byte, per tensor kind ---------------


def choose(errors: np.ndarray, sizes: np.ndarray, budget: float) -> list[int]:
    """Per group (row), the candidate (column) to use. From the least-error choice, take
    the trade to a cheaper codec that adds the least error per byte saved until the
    total fits `budget`; then, since a trade may save more than needed, take back the
    upgrades that remove the most error per byte added while they still fit."""
    pick = [int(np.lexsort((sizes[g], errors[g]))[0]) for g in range(len(errors))]

    def total() -> float:
        return float(sum(sizes[g, c] for g, c in enumerate(pick)))

    while total() > budget and (move := _best_trade(errors, sizes, pick, cheaper=True)) is not None:
        pick[move[0]] = move[1]
    while (move := _best_trade(errors, sizes, pick, cheaper=False, room=budget - total())) is not None:
        pick[move[0]] = move[1]
    return pick


def _best_trade(errors, sizes, pick, cheaper: bool, room: float = np.inf) -> tuple[int, int] | None:
    """(group, candidate) of the best single change: to a cheaper codec, the least error
    added per byte saved; to a dearer one that fits `room`, the most error removed per byte."""
    best = None
    for g, c in enumerate(pick):
        for alt in range(sizes.shape[1]):
            more = sizes[g, alt] - sizes[g, c]
            gain = errors[g, c] - errors[g, alt]
            if cheaper and more < 0:
                score = -gain / -more  # error added per byte saved: lower is better
            elif not cheaper and 0 < more <= room and gain > 0:
                score = -gain / more  # error removed per byte added, negated
            else:
                continue
            if best is None or score < best[0]:
                best = (score, g, alt)
    return None if best is None else (best[1], best[2])


@CODECS.register("content_auto")
def content_auto(candidates: list | None = None, budget: float = 0.1) -> UpdateTransform:
    """Per tensor kind, the candidate codec chosen on the client's first update so that the
    update fits `budget` x its float32 bytes with the least squared error."""
    check_fraction("budget", budget)
    specs = list(candidates) if candidates is not None else list(DEFAULT_CANDIDATES)
    if not specs:
        raise ValueError("candidates must name at least one codec")
    codecs = [_build(f"candidates[{i}]", c) for i, c in enumerate(specs)]

    def kind(name: str, shape) -> int:
        return KINDS.index(tensor_kind(name, shape))

    def measure(groups, update, params, ctx):
        errors = np.zeros((len(groups), len(codecs)))
        sizes = np.zeros((len(groups), len(codecs)))
        for g, (_, segments, sub_spec) in enumerate(groups):
            x, p = _gather(update, segments), _gather(params, segments)
            for c, codec in enumerate(codecs):
                sub_ctx = group_context(ctx, c, _first(segments), sub_spec)
                payload, _ = codec.apply(x, codec.init(p), p, sub_ctx)
                errors[g, c] = float(np.sum((codec.decode(payload, sub_ctx) - x) ** 2, dtype=np.float64))
                sizes[g, c] = Part(c, segments, payload).num_bytes
        return errors, sizes

    def apply(update: np.ndarray, state, params: np.ndarray, ctx: Context):
        groups = _groups(ctx.spec, update.size, kind)
        if state is None:
            errors, sizes = measure(groups, update, params, ctx)
            pick = choose(errors, sizes, budget * 4 * update.size)
            choice = {key: c for (key, _, _), c in zip(groups, pick)}
            state = (choice, tuple(codecs[choice[k]].init(_gather(params, s)) for k, s, _ in groups))
        choice, states = state
        payload, states = _encode_groups(codecs, groups, choice, states, update, params, ctx)
        return payload, (choice, states)

    return UpdateTransform(lambda params: None, apply, _decoder(codecs))

