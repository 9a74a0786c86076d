"""Personalisation on a real local Ray: the personal part stays with its client, and resumes."""

import numpy as np
import pytest
import pyarrow.parquet as pq

from safetensors.torch import load_file

from fedray.launcher import prepare, run
from fedray.server.personal_export import export_client
from fedray.server.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import small_config
from tests.helpers import kept_states, private_arrays_in_checkpoint, untimed

HEAD = ["2.bias", "2.weight"]
SMALL = ["model.hidden=[16]", "clients.num_clients=6", "server.clients_per_round=4",
         "data.partition=dirichlet", "data.client_test_fraction=0.25", "server.evaluation={where: both}"]


def run_quiet(cfg, resume=None, warm=None):
    return run(prepare(cfg), console=lambda line: None, resume=resume, warm=warm)


def table(run_dir, name):
    return pq.read_table(f"{run_dir}/{name}.parquet").to_pylist()


def test_fedper_head_never_leaves_its_client_and_resumes_bit_identically(ray_cluster, tmp_path, warm_actors):
    common = [*SMALL, "clients.personalization={name: fedper, args: {patterns: ['2']}}"]
    cfg = small_config(tmp_path / "straight", *common)
    straight = run_quiet(cfg, warm=warm_actors)
    run_dir = tmp_path / "straight" / "test"
    states = kept_states(run_dir, cfg)
    heads = {cid: s.personal for cid, s in states.items()}
    assert sorted(heads) and all(sorted(h) == HEAD for h in heads.values())
    first, second = sorted(heads)[:2]
    assert not np.array_equal(heads[first]["2.weight"], heads[second]["2.weight"])  # each client its own
    # What travels is the body only: every upload and the server's model are that long.
    body = 64 * 16 + 16
    checkpoint = load_checkpoint(latest_checkpoint(run_dir / "checkpoints"))
    assert checkpoint.params.shape == (body,)
    rows = table(run_dir, "metrics")
    assert [r["bytes_up"] for r in rows] == [4 * body * len(r["clients"]) for r in rows]
    assert private_arrays_in_checkpoint(run_dir, states) == []
    personal = [r for r in table(run_dir, "evaluation") if r["model"] == "personal"]
    assert {r["client_id"] for r in personal} == set(range(6))

    # `fedray export --client N`: the client's head from its store, the body from the server
    paths = export_client(run_dir, tmp_path / "export", first)
    exported = load_file(str(paths["personal"]))
    for name in HEAD:
        np.testing.assert_array_equal(exported[name].numpy(), heads[first][name])
    own = load_file(str(paths["client_model"]))
    np.testing.assert_array_equal(np.concatenate([own["0.weight"].numpy().ravel(), own["0.bias"].numpy()]),
                                  checkpoint.params)
    np.testing.assert_array_equal(own["2.weight"].numpy(), heads[first]["2.weight"])

    split = [small_config(tmp_path / "split", *common, f"server.rounds={n}") for n in (2, 3)]
    first_half = run_quiet(split[0], warm=warm_actors)
    resumed = run_quiet(split[1], resume=first_half["run_dir"], warm=warm_actors)
    assert resumed["status"] == "completed"
    again = kept_states(tmp_path / "split" / "test", split[1])
    assert {c: s.personal for c, s in again.items()}.keys() == heads.keys()
    for cid in heads:
        for name in HEAD:
            np.testing.assert_array_equal(again[cid].personal[name], heads[cid][name])
    assert untimed(table(resumed["run_dir"], "metrics")) == untimed(table(straight["run_dir"], "metrics"))
    assert untimed(table(resumed["run_dir"], "evaluation")) == untimed(table(straight["run_dir"], "evaluation"))


def test_local_sends_nothing_and_dittos_personal_model_is_not_uploaded(ray_cluster, tmp_path, warm_actors):
    alone = run_quiet(small_config(tmp_path / "local", *SMALL, "server.rounds=2", "server.strategy.name=local"),
                      warm=warm_actors)
    rows = table(alone["run_dir"], "metrics")
    assert [(r["bytes_up"], r["bytes_down"]) for r in rows] == [(0, 0), (0, 0)]
    assert rows[-1]["fed_personal_accuracy"] > rows[-1]["fed_global_accuracy"]  # each trained its own model

    cfg = small_config(tmp_path / "ditto", *SMALL, "server.rounds=2",
                       "clients.personalization={name: ditto, args: {lam: 0.1}}")
    ditto = run_quiet(cfg, warm=warm_actors)
    whole = 64 * 16 + 16 + 16 * 10 + 10
    rows = table(ditto["run_dir"], "metrics")
    assert [r["bytes_up"] for r in rows] == [4 * whole * len(r["clients"]) for r in rows]
    states = kept_states(ditto["run_dir"], cfg)
    assert all(sorted(s.personal) == ["0.bias", "0.weight", "2.bias", "2.weight"] for s in states.values())
    assert private_arrays_in_checkpoint(ditto["run_dir"], states) == []


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_personal_lora_adapter_stays_home_and_exports_for_peft(ray_cluster, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fedray.cli.main import main
    from tests.integration.test_lora import lora_config

    cfg = lora_config(tmp_path, "clients.personalization={name: personal_adapter}", "server.rounds=2",
                      "data.client_test_fraction=0.2", "server.evaluation={where: both}")
    summary = run_quiet(cfg)
    assert summary["status"] == "completed"
    run_dir = summary["run_dir"]
    states = kept_states(run_dir, cfg)
    assert all(s.personal and all(".personal." in n for n in s.personal) for s in states.values())
    shared = load_checkpoint(latest_checkpoint(f"{run_dir}/checkpoints")).params.size  # the shared adapter only
    assert shared == sum(a.size for a in states[0].personal.values())  # same rank and targets as the personal one
    rows = table(run_dir, "metrics")
    assert [r["bytes_up"] for r in rows] == [4 * shared * len(r["clients"]) for r in rows]
    assert private_arrays_in_checkpoint(run_dir, states) == []
    assert {r["model"] for r in table(run_dir, "evaluation")} == {"global", "personal"}

    out = tmp_path / "export"
    assert main(["export", str(run_dir), "--out", str(out), "--client", "1"]) == 0
    base = AutoModelForCausalLM.from_pretrained(out / "base", local_files_only=True)
    model = PeftModel.from_pretrained(base, out / "adapter")
    model.load_adapter(out / "client_1" / "personal", adapter_name="personal")
    loaded = dict(model.named_parameters())
    for name, array in states[1].personal.items():
        np.testing.assert_array_equal(loaded[name].detach().numpy(), array)


def test_a_restarted_actor_gives_its_clients_personal_models_back_bit_identically(ray_cluster, tmp_path):
    """Ditto's personal models are client state: actor 0 of the pool, killed after round 2
    and restarted by Ray, reads its clients' back from its store, and the run ends as one
    without the restart (no warm actors: the restart finds its actor by name)."""
    from fedray.launcher import run_key
    from tests.helpers import restart_when

    common = [*SMALL, "clients.personalization={name: ditto, args: {lam: 0.1}}"]
    reference = run_quiet(small_config(tmp_path / "ref", *common))
    name = f"fedray/{run_key(tmp_path / 'b' / 'test')}/0/client-actor-0"
    restart_actor_0_after_round_2 = restart_when("round 2/3", name)  # back up, with nothing of its clients in memory

    cfg = small_config(tmp_path / "b", *common)
    restarted = run(prepare(cfg), console=restart_actor_0_after_round_2)
    assert restarted["status"] == "completed"
    rows = table(restarted["run_dir"], "metrics")
    assert all(r["clients_failed"] == 0 for r in rows)
    assert untimed(rows) == untimed(table(reference["run_dir"], "metrics"))
    assert untimed(table(restarted["run_dir"], "evaluation")) == untimed(table(reference["run_dir"], "evaluation"))
    ours, theirs = kept_states(restarted["run_dir"], cfg), kept_states(reference["run_dir"], cfg)
    assert sorted(ours) == sorted(theirs) != []
    for cid, kept in ours.items():
        for key, value in kept.personal.items():
            np.testing.assert_array_equal(value, theirs[cid].personal[key])
