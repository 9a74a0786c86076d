"""The knowledge-transfer objective term: its payloads both ways, on a causal LM."""

import numpy as np
import torch

from fedray.config.schema import DistillConfig, TrainConfig
from fedray.foundation.distill import aggregate_top_k, public_logits, public_tensor, top_k
from fedray.foundation.term import knowledge_transfer
from fedray.models.flat import get_flat, param_spec
from fedray.strategy.terms import LocalRound
from fedray.types import Context, payload_bytes
from tests.unit.foundation.test_distill import public_rows, tiny_llama


class Distiller:
    """The two server calls the term makes, on fixed arrays (no ZeRO group)."""

    def __init__(self, teacher, public=None):
        self._teacher, self._public, self.absorbed = teacher, public, []

    def teacher(self):
        return self._teacher

    def refreshed_public(self):
        return self._public

    def absorb(self, logits, weights):
        self.absorbed.append((logits, weights))
        return 0.25


def local_round(model, payloads, public):
    spec = param_spec(model)
    return LocalRound(model, spec, get_flat(model, spec), payloads, Context(1, 0, 0, 2),
                      TrainConfig(batch_size=4), None, public)


def test_the_server_half_sends_the_teacher_and_a_refreshed_set_as_named_payloads():
    cfg = DistillConfig(server_to_client=True, client_to_server=True, top_k=3)
    teacher = top_k(np.random.default_rng(0).standard_normal((8, 16, 257)), 3, 2.0)
    assert knowledge_transfer(cfg, "causal_lm", Distiller(teacher)).downlink((), None) == {"teacher": teacher}
    ids = public_rows()
    sent = knowledge_transfer(cfg, "causal_lm", Distiller(None, ids)).downlink((), None)
    assert sent.keys() == {"public"} and payload_bytes(sent["public"]) == 8 * 16 * 4
    assert knowledge_transfer(cfg, "causal_lm").downlink((), None) == {}  # the clients' copy


def test_the_client_half_works_on_a_refreshed_public_set_when_one_is_broadcast():
    cfg = DistillConfig(server_to_client=True, client_to_server=True, top_k=4, temperature=1.0)
    term = knowledge_transfer(cfg, "causal_lm")
    model = tiny_llama(0)
    loaded, fresh = public_rows(seed=0), public_rows(seed=5, rows=6)
    teacher = public_logits(tiny_llama(3), "causal_lm", public_tensor("causal_lm", fresh, "cpu"), 4, 1.0)

    sent, _ = term.finish(local_round(model, {}, public_tensor("causal_lm", loaded, "cpu")), ())
    assert sent["public_logits"].indices.shape == (8, 16, 4)  # the set the actor loaded
    local = local_round(model, {"teacher": teacher, "public": fresh}, public_tensor("causal_lm", loaded, "cpu"))
    sent, _ = term.finish(local, ())
    want = public_logits(model, "causal_lm", public_tensor("causal_lm", fresh, "cpu"), 4, 1.0)
    np.testing.assert_array_equal(sent["public_logits"].indices, want.indices)
    # the KD term reads the broadcast set too: the teacher's rows are the fresh ones
    regularizer = term.objective(local, ())
    assert regularizer(model, torch.Generator().manual_seed(0)).item() > 0
    assert term.objective(local_round(model, {}, local.public), ()) is None  # no teacher, no term


def test_the_clients_logits_are_kept_per_client_and_distilled_once():
    cfg = DistillConfig(client_to_server=True, top_k=2)
    distiller = Distiller(None)
    term = knowledge_transfer(cfg, "classification", distiller)
    reducer = term.reducers(0)["public_logits"]
    one, two = (top_k(np.random.default_rng(s).standard_normal((5, 4)), 2, 2.0) for s in (1, 2))
    reducer.add(0, 10.0, one)
    reducer.add(1, 30.0, two)
    combined, _ = reducer.result()
    state, metrics = term.absorb((), {"public_logits": combined}, None)
    assert metrics == {"kd_loss": 0.25} and distiller.absorbed == [([one, two], [10.0, 30.0])]
    merged = aggregate_top_k(*distiller.absorbed[0], k=2)
    assert merged.values.shape == (5, 2)
