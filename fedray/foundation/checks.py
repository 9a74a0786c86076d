"""What knowledge transfer needs, checked before Ray starts: one output space, a usable public set.

Logits travel as (index, value) pairs and are compared index by index, so the
clients' models and the foundation model must predict over the same classes,
or over the same tokenizer's vocabulary, token id by token id. A synthetic
public set further needs a text task (a tokenizer to start sequences with and
encode prompts), a foundation model that is a causal LM, and prompts that leave
room to sample.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from fedray.foundation.public import PUBLIC_TASKS, prompt_prefixes, public_seq_len

if TYPE_CHECKING:
    from fedray.config.schema import RunConfig
    from fedray.data.federated import FederatedDataset


def output_size(model: Any) -> int:
    """Width of a model's logits: a transformers config's vocabulary, or the last
    linear layer's outputs."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "vocab_size", None):
        return int(config.vocab_size)
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError("cannot tell the model's output size (no Linear layer, no config.vocab_size)")
    return int(linears[-1].out_features)


def check_compatible(client_outputs: int, server_outputs: int) -> None:
    """Distillation maps output index i to index i: the output spaces must agree."""
    if client_outputs != server_outputs:
        raise ValueError(
            f"server.distill: the clients' model has {client_outputs} outputs and the foundation "
            f"model {server_outputs}; knowledge transfer needs a shared output space (the same "
            "classes, or the same tokenizer and vocabulary)")


def foundation_problems(cfg: "RunConfig", dataset: "FederatedDataset", client_model: Any) -> list[str]:
    """Every reason this run's knowledge transfer cannot work, as config errors."""
    import torch

    from fedray.models.build import MODELS

    task = dataset.info.task
    if task not in PUBLIC_TASKS.names():
        return [f"server.foundation_model: knowledge transfer is implemented for {PUBLIC_TASKS.names()} "
                f"datasets, not for task '{task}' (data.dataset={cfg.data.dataset})"]
    if cfg.server.distill.public.generated and task != "causal_lm":
        return [f"server.distill.public.source=generate samples text, which needs a tokenizer: "
                f"data.dataset={cfg.data.dataset} is a '{task}' dataset without one"]
    spec = cfg.server.foundation_model.model
    try:
        with torch.device("meta"):
            server_model = MODELS.build(spec.name, spec, dataset.info)
        if task == "causal_lm":
            check_vocabularies(cfg, output_size(client_model), output_size(server_model))
        else:
            check_compatible(output_size(client_model), output_size(server_model))
    except (ValueError, TypeError, RuntimeError) as err:
        return [f"server.foundation_model.model: {err}"]
    if cfg.server.distill.public.generated:
        return generation_problems(cfg, server_model)
    return []


# ---- one vocabulary -------------------------------------------------------------
def vocabulary(tokenizer: Any) -> tuple[int, str]:
    """(size, fingerprint) of a tokenizer: its token -> id table hashed, or its class
    for tokenizers defined by code (the byte-level one)."""
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is None or not hasattr(inner, "get_vocab"):
        return int(tokenizer.vocab_size), type(tokenizer).__name__
    table = sorted(inner.get_vocab().items(), key=lambda item: item[1])
    return int(tokenizer.vocab_size), hashlib.sha1(repr(table).encode()).hexdigest()


def check_vocabularies(cfg: "RunConfig", client_outputs: int, server_outputs: int) -> None:
    """The clients' tokens (`data.tokenizer`) must be the foundation model's: same logits
    width, and, if the foundation model is a checkpoint with its own tokenizer, the
    same token table. The error names both vocabularies."""
    from fedray.data.tokenize import TOKENIZERS

    spec = cfg.server.foundation_model.model
    run_size, run_print = vocabulary(TOKENIZERS.build(cfg.data.tokenizer, cfg.model))
    clients = f"data.tokenizer={cfg.data.tokenizer}: {run_size} tokens, logits over {client_outputs}"
    server_size, server_print = run_size, run_print
    server = f"logits over {server_outputs}, reading the same data.tokenizer ids"
    if spec.path is not None:
        server_size, server_print = vocabulary(TOKENIZERS.build("model", spec))
        server = f"the tokenizer of {spec.path}: {server_size} tokens, logits over {server_outputs}"
    if client_outputs != server_outputs or server_print != run_print:
        raise ValueError(
            f"vocabulary mismatch: the clients' vocabulary is {clients}; the foundation model's is "
            f"{server}. Knowledge transfer compares logits token id by token id, so both models "
            "need one tokenizer and vocabulary")


# ---- a synthetic public set -------------------------------------------------------
def generation_problems(cfg: "RunConfig", server_model: Any) -> list[str]:
    """The foundation model must be a causal LM, and every prompt must leave tokens to sample."""
    can_generate = getattr(server_model, "can_generate", None)
    if not callable(can_generate) or not can_generate():
        return [f"server.distill.public.source=generate: the foundation model "
                f"({cfg.server.foundation_model.model.name}) cannot generate text; it must be a causal LM"]
    seq_len = public_seq_len(cfg)
    problems = []
    for i, prefix in enumerate(prompt_prefixes(cfg)):
        if cfg.server.distill.public.prompts and len(prefix) >= seq_len:
            problems.append(
                f"server.distill.public.prompts[{i}] is {len(prefix)} tokens with the leading "
                f"end-of-document token, not shorter than server.distill.public.seq_len={seq_len} "
                "(or data.seq_len), so no token is left to sample")
    return problems
