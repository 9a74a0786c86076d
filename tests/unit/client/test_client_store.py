"""The client state store: one file per actor and round, digests, the two-phase commit,
lost states (error or counted reset)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fedray.client.store import ClientStates, StateCodec, StateLost, StateStore, digest, resolve_state_dir
from fedray.privacy.dpsgd import Account
from fedray.server.serialize import decode, encode
from fedray.strategy.algorithm import KeptState

CODEC = StateCodec(encode, decode)


def kept(seed: int, epsilon: float | None = None) -> KeptState:
    """A state with everything a client keeps: optimizer tensors, a control variate, a
    residual, a DP account."""
    rng = np.random.default_rng(seed)
    optimizer = {"state": {0: {"momentum_buffer": torch.tensor(rng.normal(size=(3, 2))), "step": torch.tensor(2.0)}},
                 "param_groups": [{"lr": 0.1, "params": [0]}]}
    account = None if epsilon is None else Account(((1.1, 0.25, 4 * seed),), epsilon)
    return KeptState(optimizer, (rng.normal(size=7).astype(np.float32),), (rng.normal(size=7).astype(np.float32),),
                     account)


def states(tmp_path, hosted=range(0, 6, 2), reset=False) -> ClientStates:
    return ClientStates(StateStore(str(tmp_path), 0, CODEC), hosted, reset_lost=reset)


def test_a_state_reads_back_bit_identically_with_the_same_digest(tmp_path):
    store = StateStore(str(tmp_path), 3, CODEC)
    store.write(5, {4: kept(1, 0.5)}, {})
    back = StateStore(str(tmp_path), 3, CODEC).read(5)["committed"][4]
    assert digest(back) == digest(kept(1, 0.5)) != digest(kept(2, 0.5))
    assert torch.equal(back.optimizer["state"][0]["momentum_buffer"], kept(1).optimizer["state"][0]["momentum_buffer"])
    assert os.listdir(tmp_path) == ["actor_00003"] and os.listdir(tmp_path / "actor_00003") == ["round_000005.safetensors"]


def test_only_committed_pending_states_become_current_and_one_file_holds_the_round(tmp_path):
    client = states(tmp_path)
    initial = kept(0)
    refs = {c: client.stage(c, 100 + c, kept(c), initial) for c in (0, 2, 4)}
    out = client.commit(1, committed={0: 100, 2: 100}, spent={4: 104}, keep={})  # 2's token is not its fit's
    assert set(out) == {0} and out[0].digest == refs[0].digest == digest(kept(0))
    assert client.pending == {} and set(client.current) == {0}
    assert os.listdir(tmp_path / "actor_00000") == ["round_000001.safetensors"]
    # a fresh actor (a restart, a resume) reads it back, checked against the digest
    again = states(tmp_path)
    state, reset = again.get(0, out[0], lambda: pytest.fail("not lost"))
    assert digest(state) == out[0].digest and not reset


def test_an_update_sent_but_not_aggregated_keeps_only_its_privacy_spend(tmp_path):
    client = states(tmp_path)
    before, after = kept(1, epsilon=0.5), kept(2, epsilon=0.9)
    client.stage(2, 7, after, before)
    out = client.commit(3, committed={}, spent={2: 7}, keep={})
    state = client.current[2][1]
    assert state.privacy == after.privacy and out[2].dp_epsilon == 0.9
    np.testing.assert_array_equal(state.terms[0], before.terms[0])  # the rest as it was


def test_in_flight_pending_states_survive_a_restart_through_the_store(tmp_path):
    client = states(tmp_path)
    client.stage(4, 11, kept(4), kept(0))
    client.commit(2, committed={}, spent={}, keep={4: 11})  # async: still in flight
    restarted = states(tmp_path)
    out = restarted.commit(3, committed={4: 11}, spent={}, keep={})
    assert out[4].digest == digest(kept(4))


@pytest.mark.parametrize("damage", ["deleted", "altered"])
def test_a_lost_state_is_an_error_naming_the_client_or_a_counted_reset(tmp_path, damage):
    client = states(tmp_path)
    client.stage(2, 5, kept(2), kept(0))
    ref = client.commit(1, {2: 5}, {}, {})[2]
    path = tmp_path / "actor_00000" / "round_000001.safetensors"
    if damage == "deleted":
        path.unlink()
    else:
        StateStore(str(tmp_path), 0, CODEC).write(1, {2: kept(3)}, {})
    with pytest.raises(StateLost, match="client 2's state of round 1"):
        states(tmp_path).get(2, ref, lambda: kept(0))
    state, reset = states(tmp_path, reset=True).get(2, ref, lambda: kept(0))
    assert reset and digest(state) == digest(kept(0))


def test_the_state_dir_is_per_run(tmp_path):
    assert resolve_state_dir(None, str(tmp_path / "exp")) == str(tmp_path / "exp" / "clients")
    assert resolve_state_dir("/scratch/fedray", "s3://bucket/runs/exp") == "/scratch/fedray/exp"
    assert resolve_state_dir("file:///scratch", str(tmp_path / "exp-2")) == "/scratch/exp-2"


def test_a_personal_part_commits_with_the_state_and_restores_on_a_fresh_actor(tmp_path):
    """Personalisation's tensors (FedPer's head) are client state: committed only when the
    update was aggregated, read back bit-identically by a restarted actor."""
    rng = np.random.default_rng(7)
    head = {"2.weight": rng.normal(size=(10, 16)).astype(np.float32), "2.bias": rng.normal(size=10).astype(np.float32)}
    client = states(tmp_path)
    before = kept(0)
    mine = before._replace(personal=head)
    client.stage(2, 11, mine, before)
    client.stage(4, 12, kept(4)._replace(personal={"2.bias": np.zeros(10, np.float32)}), kept(4))
    refs = client.commit(1, committed={2: 11}, spent={}, keep={})  # 4's update was not aggregated
    assert set(refs) == {2}
    state, _ = states(tmp_path).get(2, refs[2], lambda: pytest.fail("not lost"))
    assert sorted(state.personal) == ["2.bias", "2.weight"]
    for name, array in head.items():
        np.testing.assert_array_equal(np.asarray(state.personal[name]), array)
    assert digest(state) == digest(mine)
