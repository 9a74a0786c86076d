"""`personal_adapter`: a LoRA run's second adapter, each client's own, beside the shared one.

Every process that builds the run's model adds a second PEFT adapter named
`personal` (same rank and target modules as the shared `default` one; its A
seeded alike everywhere, its B zero, so it starts as a no-op) and keeps both
active: the forward pass adds both low-rank updates and both train. The shared
adapter is aggregated as usual; the personal one is client state, as FedPer's
layers are. `fedray export --client N` writes it in PEFT format
(`client_N/personal/`), loadable with `PeftModel.from_pretrained(..., adapter_name=...)`.
"""

from __future__ import annotations

from fedray.personalization.base import PERSONALIZATIONS, Personalization

PERSONAL = "personal"
"""The PEFT adapter name of the personal adapter."""
INIT_SEED = 0xADA9
"""Mixed into the run's seed for the personal adapter's initial A."""


def personal_names(model) -> frozenset[str]:
    """The personal adapter's tensors among the model's travelling ones."""
    from fedray.models.flat import travelling

    return frozenset(n for n in travelling(model) if f".{PERSONAL}." in n)


def add_personal_adapter(model, cfg) -> None:
    """Add the personal adapter (seeded: the same on every process) and keep it active
    with the shared one."""
    import torch

    from fedray.models.adapters import lora_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed ^ INIT_SEED)
        model.add_adapter(PERSONAL, lora_config(cfg.model.peft, cfg.model.peft.r))
    model.base_model.set_adapter(["default", PERSONAL])


def problems(cfg) -> list[str]:
    """A personal adapter needs LoRA, one rank for every client, and adapters that are
    aggregated (not folded into the base, `stack`)."""
    peft = cfg.model.peft
    if peft is None:
        return [f"clients.personalization: personal_adapter needs a LoRA run (model.peft), but model.name="
                f"{cfg.model.name} trains its whole model; use fedper, fedrep, ditto or fedbn"]
    out = []
    if peft.client_ranks or peft.rank_rule != "uniform":
        out.append("clients.personalization: personal_adapter needs one rank for every client "
                   f"(model.peft.rank_rule: uniform, no client_ranks), got rank_rule={peft.rank_rule}")
    if peft.aggregation == "stack":
        out.append("clients.personalization: personal_adapter needs model.peft.aggregation other than stack "
                   "(stack folds the shared adapter into the base each round)")
    return out


@PERSONALIZATIONS.register("personal_adapter")
def personal_adapter() -> Personalization:
    """A personal LoRA adapter per client beside the shared, aggregated one."""
    return Personalization("personal_adapter", local=personal_names, extend=add_personal_adapter,
                           problems=problems, on_lora=True)
