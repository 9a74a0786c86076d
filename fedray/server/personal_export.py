"""`fedray export RUN_DIR --client N`: one client's personal part, next to the shared model.

A personalised run (`clients.personalization`, or `server.strategy.name: local`)
keeps each client's personal tensors in its client store, never on the server. The
export reads client N's committed state from the store the run wrote (as its
newest checkpoint names it: round and digest, checked) and writes, as
safetensors keyed by parameter name:

- `global/model.safetensors`: the server's model (the shared tensors it aggregated,
  and its own untouched copy of the personal ones);
- `client_N/personal.safetensors`: client N's personal tensors alone (FedPer's and
  FedRep's head, FedBN's norm layers, Ditto's or a local client's whole model);
- `client_N/model.safetensors`: the global model with them in place: client N's own
  model, loadable with `model.load_state_dict(safetensors.torch.load_file(...))`.

A LoRA run with `personal_adapter` exports as `fedray export` does (`base/`, the shared
`adapter/`) and client N's personal adapter in PEFT format, `client_N/personal/`:
`PeftModel.from_pretrained(base, out/"adapter")`, then
`model.load_adapter(out/"client_N"/"personal", adapter_name="personal")` and
`model.base_model.set_adapter(["default", "personal"])` is client N's model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from fedray.client.pool import actor_index
from fedray.client.store import StateCodec, StateLost, StateStore, resolve_state_dir
from fedray.config.load import load_run_config
from fedray.server.checkpoint import list_checkpoints, load_checkpoint
from fedray.server.state_checks import RunShape


def export_client(run_dir: str | Path, out: str | Path, client_id: int,
                  allow_code: Sequence[str] = ()) -> dict[str, Path]:
    """Write the files of the module docstring; their paths. ValueError naming the run
    directory and the client where there is nothing to export."""
    import functools

    from safetensors.torch import save_file

    from fedray.server.serialize import decode, encode
    from fedray.server.state_types import StateTypes

    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"{run_dir} is not a fedray run directory (no config.yaml)")
    cfg = load_run_config(run_dir / "config.yaml", allow_code)
    if cfg.clients.personalization is None and cfg.server.strategy.name != "local":
        raise ValueError(f"{run_dir} has no personal part to export (clients.personalization is null and "
                         f"server.strategy.name is {cfg.server.strategy.name!r}); drop --client")
    if not 0 <= client_id < cfg.clients.num_clients:
        raise ValueError(f"--client {client_id}: {run_dir} has clients 0..{cfg.clients.num_clients - 1}")
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise ValueError(f"no checkpoint under {run_dir / 'checkpoints'} (server.checkpoint_every was 0?)")
    state = load_checkpoint(found[-1], RunShape.of(cfg))
    ref = state.client_refs.get(client_id)
    if ref is None:
        raise ValueError(f"client {client_id} of {run_dir} has no committed state: none of its updates was "
                         "aggregated, so its personal part is still the initial one")
    types = StateTypes.of(cfg)
    store = StateStore(resolve_state_dir(cfg.clients.state_dir, str(run_dir)), actor_index(client_id, cfg),
                       StateCodec(functools.partial(encode, types=types), functools.partial(decode, types=types)))
    try:
        personal = store.committed(client_id, ref).personal
    except StateLost as err:
        raise ValueError(f"client {client_id}: {err}") from None
    if not personal:
        raise ValueError(f"client {client_id} of {run_dir} keeps no personal tensors "
                         f"(clients.personalization {cfg.clients.personalization.name!r} makes its personal "
                         "model at evaluation time)")
    if cfg.model.peft is not None:
        return _export_adapter(run_dir, out, client_id, cfg, state.params, personal, allow_code)
    server_model = _server_model(cfg, state.params)
    shared = {n: t.detach().contiguous() for n, t in server_model.state_dict().items()}
    own = {**shared, **{n: _tensor(a) for n, a in personal.items()}}
    meta = {"client": str(client_id), "round": str(ref.server_round), "digest": ref.digest}
    paths = {"global": out / "global" / "model.safetensors",
             "personal": out / f"client_{client_id}" / "personal.safetensors",
             "client_model": out / f"client_{client_id}" / "model.safetensors"}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    save_file(shared, str(paths["global"]))
    save_file({n: _tensor(a) for n, a in personal.items()}, str(paths["personal"]), metadata=meta)
    save_file(own, str(paths["client_model"]), metadata=meta)
    return paths


def _export_adapter(run_dir: Path, out: Path, client_id: int, cfg, params, personal: dict,
                    allow_code: Sequence[str]) -> dict[str, Path]:
    """A LoRA run: the shared export (`base/`, `adapter/`) and client N's personal adapter
    in PEFT format (`client_N/personal/`), its base `base` relative to the export folder."""
    import torch

    from fedray.data.text import text_info
    from fedray.data.tokenize import TOKENIZERS
    from fedray.models.build import build_model
    from fedray.models.flat import travelling
    from fedray.personalization import personalize
    from fedray.personalization.adapter import PERSONAL
    from fedray.server.export import export_adapter

    paths = export_adapter(run_dir, out, allow_code=allow_code)
    info = text_info(cfg.data.seq_len, TOKENIZERS.build(cfg.data.tokenizer, cfg.model).vocab_size)
    model = build_model(cfg.model, info, cfg.seed)
    personalize(cfg, model)
    tensors = travelling(model)
    with torch.no_grad():
        for name, array in personal.items():
            tensors[name].copy_(_tensor(array))
    model.peft_config[PERSONAL].base_model_name_or_path = "base"
    folder = out / f"client_{client_id}"
    model.save_pretrained(folder, selected_adapters=[PERSONAL])
    return {**paths, "personal_adapter": folder / PERSONAL}


def _server_model(cfg, params):
    """The server's model: built as the run built it, the shared tensors from `params`."""
    from fedray.data.plan import plan_federated_dataset
    from fedray.models.build import build_model
    from fedray.models.flat import set_flat
    from fedray.personalization import shared_spec

    info = plan_federated_dataset(dataclasses.replace(cfg.data), cfg.model, cfg.clients.num_clients, cfg.seed).info
    model = build_model(cfg.model, info, cfg.seed)
    set_flat(model, shared_spec(cfg, model), params)
    return model


def _tensor(array):
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).clone()
