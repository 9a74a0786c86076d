"""reasoning_gym data: seeded, one owner per task family, answers scored by the verifiers."""

import json

import pytest

from fedray.config.schema import DataConfig
from fedray.data.federated import build_federated_dataset
from fedray.data.tokenize import ByteTokenizer
from fedray.models.instruct_task import score_answer

pytest.importorskip("reasoning_gym")


def config(seed: int = 0, tasks=("gcd", "spell_backward+lcm")) -> DataConfig:
    cfg = DataConfig(dataset="reasoning_gym", partition="natural", seq_len=200)
    cfg.reasoning_gym.tasks, cfg.reasoning_gym.examples_per_task, cfg.reasoning_gym.seed = list(tasks), 6, seed
    return cfg


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_questions():
    first = build_federated_dataset(config(), 2, seed=0, tokenizer=ByteTokenizer())
    again = build_federated_dataset(config(), 2, seed=0, tokenizer=ByteTokenizer())
    other = build_federated_dataset(config(seed=1), 2, seed=0, tokenizer=ByteTokenizer())
    assert first.train.equals(again.train) and first.test.equals(again.test)
    assert first.train.column("reference").to_pylist() != other.train.column("reference").to_pylist()


def test_each_entry_of_tasks_is_one_owner_and_natural_gives_it_a_client():
    fed = build_federated_dataset(config(), 2, seed=0, tokenizer=ByteTokenizer())
    assert fed.owner_names == ("gcd", "spell_backward+lcm")
    families = [json.loads(e)["metadata"]["source_dataset"] for e in fed.shard(1).column("entry").to_pylist()]
    assert set(families) == {"spell_backward", "lcm"}
    assert fed.num_examples(0) + fed.num_examples(1) + fed.test.num_rows == 18


def test_the_verifier_scores_the_reference_answer_right_and_another_wrong():
    fed = build_federated_dataset(config(), 2, seed=0, tokenizer=ByteTokenizer())
    for reference, entry in zip(fed.test.column("reference").to_pylist(), fed.test.column("entry").to_pylist()):
        assert score_answer(reference, "", entry) == 1.0
        assert score_answer("", "", entry) < 1.0


def test_an_unknown_family_names_the_key():
    with pytest.raises(ValueError, match="data.reasoning_gym.tasks: unknown task family 'gcdd'"):
        build_federated_dataset(config(tasks=("gcdd",)), 1, seed=0, tokenizer=ByteTokenizer())
