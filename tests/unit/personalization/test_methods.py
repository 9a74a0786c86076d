"""Personalisation methods: what stays local, and each method's training against a hand computation."""

import copy

import numpy as np
import pytest
import torch

from fedray.client.train import train_local
from fedray.config import load_config
from fedray.config.schema import DataConfig, ModelConfig, Optimizer, TrainConfig
from fedray.data.federated import build_federated_dataset
from fedray.models.build import build_model
from fedray.models.flat import param_spec, travelling
from fedray.models.tasks import Classification
from fedray.personalization import PERSONALIZATIONS, Fit, build_personalization, local_names, shared_spec
from fedray.personalization.base import matching, pattern_problems
from fedray.personalization.client import PersonalParts
from fedray.personalization.ditto import pull
from fedray.personalization.fedbn import norm_names

ONE_STEP = TrainConfig(local_steps=1, batch_size=10_000, optimizer=Optimizer.sgd, lr=0.5, momentum=0.0)
"""One full-batch plain SGD step: a fit a hand computation can follow."""


@pytest.fixture(scope="module")
def shard():
    data = build_federated_dataset(DataConfig(), num_clients=4, seed=0)
    task = Classification()
    return data, task, task.prepare(data.shard(0), torch.device("cpu"))


def mlp(data):
    return build_model(ModelConfig(hidden=[16]), data.info, seed=0)


def cfg_with(*overrides):
    return load_config(None, ["model.hidden=[16]", *overrides])


def full_batch_grads(model, task, tensors) -> dict[str, torch.Tensor]:
    batch = next(iter(task.batches(tensors, 10_000, torch.Generator().manual_seed(0))))
    model.zero_grad()
    task.loss(model, batch).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_patterns_match_names_and_module_prefixes():
    names = ["0.weight", "0.bias", "2.weight", "2.bias", "head.proj.weight"]
    assert matching(names, ["2"]) == {"2.weight", "2.bias"}
    assert matching(names, ["*.bias"]) == {"0.bias", "2.bias"}
    assert matching(names, ["head"]) == {"head.proj.weight"}
    assert pattern_problems("k", ["9"], names, "fedper") == [
        "k: pattern '9' matches no parameter of the model (its tensors: " + ", ".join(names) + ")"]
    assert "nothing would be shared" in pattern_problems("k", ["*"], names, "fedper")[0]


def test_fedper_personal_layers_leave_the_exchange(shard):
    data, _, _ = shard
    model = mlp(data)
    cfg = cfg_with("clients.personalization={name: fedper, args: {patterns: ['2']}}")
    assert local_names(cfg, model) == {"2.weight", "2.bias"}
    spec = shared_spec(cfg, model)
    assert spec.names == ("0.weight", "0.bias")
    assert spec.num_params == param_spec(model).num_params - model[2].weight.numel() - model[2].bias.numel()


def test_local_strategy_shares_nothing(shard):
    data, _, _ = shard
    model = mlp(data)
    cfg = cfg_with("server.strategy.name=local")
    assert local_names(cfg, model) == set(travelling(model))
    assert shared_spec(cfg, model).num_params == 0
    assert build_personalization(cfg).name == "local"


def test_fedbn_keeps_norm_weights_and_running_statistics():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    assert norm_names(model) == {"1.weight", "1.bias", "1.running_mean", "1.running_var", "4.weight", "4.bias"}
    assert norm_names(torch.nn.Sequential(torch.nn.Linear(4, 2))) == frozenset()


def test_pool_actor_model_holds_each_clients_own_layers(shard):
    """One model serves many clients: each fit loads its client's layers (or the initial
    ones every client and the server start from) and keeps exactly what it trained."""
    data, task, tensors = shard
    model = mlp(data)
    initial = model[2].weight.detach().clone()
    parts = PersonalParts(PERSONALIZATIONS.build("fedper", patterns=["2"]), frozenset({"2.weight", "2.bias"}), model)
    fit = Fit(task, tensors, ONE_STEP, seed=1, trainer=train_local)
    parts.load(model, None)
    parts.train(model, fit)
    kept_a = parts.keep(model, None, dict, fit)
    np.testing.assert_array_equal(kept_a["2.weight"], model[2].weight.detach().numpy())
    assert not np.array_equal(kept_a["2.weight"], initial.numpy())
    parts.load(model, None)  # another client, first round: the initial head, not client a's
    torch.testing.assert_close(model[2].weight, initial, rtol=0, atol=0)
    parts.load(model, kept_a)
    np.testing.assert_array_equal(model[2].weight.detach().numpy(), kept_a["2.weight"])


def test_fedrep_trains_head_then_body(shard):
    """Head step with the body frozen, then a body step on the new head with the head frozen."""
    data, task, tensors = shard
    model = mlp(data)
    reference = copy.deepcopy(model)
    method = PERSONALIZATIONS.build("fedrep", patterns=["2"], head_epochs=1)
    head = frozenset({"2.weight", "2.bias"})
    method.train(model, head, Fit(task, tensors, ONE_STEP, seed=1, trainer=train_local))
    grads = full_batch_grads(reference, task, tensors)
    with torch.no_grad():  # by hand: head <- head - lr grad_head L(body, head)
        for name in head:
            reference.get_parameter(name).sub_(ONE_STEP.lr * grads[name])
    grads = full_batch_grads(reference, task, tensors)  # then body <- body - lr grad_body L(body, head')
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if name not in head:
                p.sub_(ONE_STEP.lr * grads[name])
    for (name, got), want in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # the phases' freezing is undone


def test_ditto_personal_step_is_pulled_to_the_global_model(shard):
    """v <- v - lr (grad F(v) + lambda (v - w)), from a personal model away from w."""
    data, task, tensors = shard
    lam = 0.7
    model = mlp(data)
    anchor = {n: t.detach().clone() for n, t in travelling(model).items()}
    state = {n: (t + 0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(3))).numpy()
             for n, t in anchor.items()}
    method = PERSONALIZATIONS.build("ditto", lam=lam)
    got = method.personal(model, state, anchor, Fit(task, tensors, ONE_STEP, seed=1, trainer=train_local))
    reference = mlp(data)
    with torch.no_grad():
        for n, t in travelling(reference).items():
            t.copy_(torch.as_tensor(state[n]))
    grads = full_batch_grads(reference, task, tensors)
    for name, p in reference.named_parameters():
        want = state[name] - ONE_STEP.lr * (grads[name].numpy() + lam * (state[name] - anchor[name].numpy()))
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_ditto_pull_is_half_lambda_squared_distance():
    model = torch.nn.Linear(2, 1)
    anchor = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    value = pull(0.3, anchor)(model, None)
    want = 0.5 * 0.3 * sum(float((p.detach() ** 2).sum()) for p in model.parameters())
    assert float(value) == pytest.approx(want)


def test_finetune_adapts_a_copy_and_leaves_the_global_model(shard):
    data, task, tensors = shard
    model = mlp(data)
    before = [p.detach().clone() for p in model.parameters()]
    parts = PersonalParts(PERSONALIZATIONS.build("finetune", steps=3), frozenset(), model)
    personal = parts.personal_model(model, None, lambda: Fit(task, tensors, ONE_STEP, seed=1, trainer=train_local))
    for p, b in zip(model.parameters(), before):
        torch.testing.assert_close(p, b, rtol=0, atol=0)
    assert task.evaluate(personal, tensors, 256)["loss"] < task.evaluate(model, tensors, 256)["loss"]


@pytest.mark.parametrize("name, args, match", [
    ("finetune", {"steps": 0}, "steps must be >= 1"),
    ("fedrep", {"patterns": ["2"], "head_epochs": 0}, "head_epochs must be >= 1"),
    ("ditto", {"lam": -1.0}, "lam must be >= 0"),
    ("fedper", {}, "needs argument"),
])
def test_bad_arguments_name_the_method(name, args, match):
    with pytest.raises(ValueError, match=match):
        PERSONALIZATIONS.build(name, **args)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"clients.personalization: Unknown personalization 'fedpr'; choose one "
                                         r"of \['ditto', 'fedbn', 'fedper', 'fedrep', 'finetune', 'personal_adapter'\]"):
        build_personalization(cfg_with("clients.personalization={name: fedpr}"))
