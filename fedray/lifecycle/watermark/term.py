"""`server.watermark` in a run: the owners' objective term, their key files, and the checks before a run.

Each owner (a client id in `server.watermark.owners`) has its own key file in the
keys folder; the server writes the missing ones when the run starts (before any
client trains) and every later start (resume, restart) reuses them, so the
watermark embedded stays the same. A client reads its own key when it first
trains; clients that are not owners train as usual.
"""

from __future__ import annotations

from typing import Any

from fedray.config.ownership import WatermarkConfig
from fedray.config.paths import unwritable_folder
from fedray.config.schema import RunConfig
from fedray.data.datasets import DataInfo
from fedray.lifecycle.watermark.keys import as_json, key_path, new_key, read_key, write_key
from fedray.lifecycle.watermark.scheme import SCHEMES, Scheme
from fedray.strategy.terms import LocalRound, Term
from fedray.types import ParamSpec


def build_scheme(cfg: WatermarkConfig) -> Scheme:
    """The configured scheme; ValueError starting with `server.watermark`."""
    try:
        return SCHEMES.build(cfg.name, **dict(cfg.args))
    except ValueError as err:
        raise ValueError(f"server.watermark: {err}") from None


def watermark_terms(cfg: RunConfig) -> tuple[Term, ...]:
    """The owners' embedding term (none without `server.watermark`)."""
    wm = cfg.server.watermark
    if wm.name is None:
        return ()
    scheme, owners, keys = build_scheme(wm), frozenset(wm.owners), {}

    def objective(local: LocalRound, state: Any):
        cid = local.ctx.client_id
        if cid not in owners:
            return None
        if cid not in keys:  # the owner's own secret, read once on its actor
            keys[cid] = read_key(key_path(wm.keys, cid))
        return scheme.regularizer(keys[cid], local)

    return (Term(objective=objective),)


def key_problem(key: dict, cfg: WatermarkConfig, owner: int, layout: dict) -> str | None:
    """Why an existing key cannot be the one this run embeds, or None."""
    if key["owner"] != owner:
        return f"it belongs to client {key['owner']}, not {owner}"
    if key["scheme"] != cfg.name or key["args"] != as_json(dict(cfg.args)):
        return f"it was made for {key['scheme']} {key['args']}, not {cfg.name} {dict(cfg.args)}"
    if key["layout"] != as_json(layout):
        return "it was made for another model (other parameters or outputs)"
    return None


def watermark_problems(cfg: RunConfig, spec: ParamSpec, info: DataInfo) -> list[str]:
    """Everything wrong with `server.watermark` for this model, before Ray starts: the
    scheme's arguments, whether it fits the model, existing keys that do not match."""
    wm = cfg.server.watermark
    if wm.name is None:
        return []
    try:
        scheme = build_scheme(wm)
        layout = scheme.layout(spec, info)
    except ValueError as err:
        text = str(err)
        return [text if text.startswith("server.watermark") else f"server.watermark.args: {text}"]
    out = _folder_problems(wm.keys)
    peft = cfg.model.peft
    if scheme.same_layout and peft is not None and (
            peft.aggregation != "mean" or peft.client_ranks or peft.rank_rule != "uniform"):
        out.append(f"server.watermark.name={wm.name} reads the adapter by name, so every client must train "
                   "the global rank with model.peft.aggregation=mean (no rank_rule tiers, no client_ranks)")
    for owner in wm.owners:
        path = key_path(wm.keys, owner)
        if path.exists():
            try:
                problem = key_problem(read_key(path), wm, owner, layout)
            except ValueError as err:
                problem = str(err)
            if problem:
                out.append(f"server.watermark.keys: {path} cannot be reused: {problem}; "
                           "choose another folder or remove the file")
    return out


def _folder_problems(folder: str) -> list[str]:
    """The keys folder must be one this process can create or write into."""
    problem = unwritable_folder(folder)
    return [] if problem is None else [f"server.watermark.keys: {problem} (keys={folder})"]


def ensure_keys(cfg: WatermarkConfig, spec: ParamSpec, info: DataInfo) -> None:
    """Write a key for every owner that has none (existing keys were checked before the run)."""
    if cfg.name is None:
        return
    layout = build_scheme(cfg).layout(spec, info)
    for owner in cfg.owners:
        path = key_path(cfg.keys, owner)
        if not path.exists():
            write_key(path, new_key(cfg.name, dict(cfg.args), owner, layout))
