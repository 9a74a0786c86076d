"""Text datasets: reading owners from files, packing into rows, natural partitions, Shakespeare."""

import json
import re

import numpy as np
import pytest

from fedray.config.schema import DataConfig
from fedray.data.arrow import token_arrays
from fedray.data.federated import build_federated_dataset
from fedray.data.shakespeare import parse_play, shakespeare
from fedray.data.text import PAD, TextCorpus, pack, select_owners, text_files
from fedray.data.tokenize import ByteTokenizer


@pytest.fixture
def folder(tmp_path):
    """Three owners: a .txt file, a .jsonl file, and a sub-folder holding both kinds."""
    root = tmp_path / "corpus"
    (root / "carol").mkdir(parents=True)
    (root / "alice.txt").write_text("hello world " * 20)
    (root / "bob.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i} of bob"}) for i in range(30)) + "\n\n")
    (root / "carol" / "a.txt").write_text("carol writes " * 10)
    (root / "carol" / "b.jsonl").write_text(json.dumps({"text": "and one record"}) + "\n")
    (root / ".hidden").write_text("ignored")
    return root


def test_a_folder_gives_one_owner_per_entry(folder):
    corpus = text_files(DataConfig(dataset="text", path=str(folder)))
    assert corpus.owners == ("alice", "bob", "carol")
    assert [len(d) for d in corpus.documents] == [1, 30, 2]
    assert corpus.documents[1][2] == "doc 2 of bob" and corpus.documents[2][1] == "and one record"
    single = text_files(DataConfig(dataset="text", path=str(folder / "bob.jsonl")))
    assert single.owners == ("bob",) and len(single.documents[0]) == 30


def test_packing_ends_documents_with_eos_and_pads_each_owner_apart():
    corpus = TextCorpus(("a", "b"), (("abc", "de"), ("xyzw",)))
    blocks = pack(corpus, ByteTokenizer(), seq_len=4)
    eos = ByteTokenizer.eos_id
    assert blocks.ids.tolist() == [
        [97, 98, 99, eos], [100, 101, eos, PAD],  # owner a: "abc<eos>de<eos>"
        [120, 121, 122, 119], [eos, PAD, PAD, PAD],  # owner b never shares a row with a
    ]
    assert blocks.owner.tolist() == [0, 0, 1, 1] and blocks.info.vocab_size == 257


def test_natural_partition_and_split_keep_owners_apart(folder):
    cfg = DataConfig(dataset="text", path=str(folder), partition="natural", seq_len=16, test_fraction=0.25)
    data = build_federated_dataset(cfg, num_clients=3, seed=0)
    assert data.owner_names == ("alice", "bob", "carol") and data.info.task == "causal_lm"
    for client in range(3):
        ids, owner = token_arrays(data.shard(client))
        assert ids.shape[1] == 16 and set(owner.tolist()) == {client}
    _, test_owner = token_arrays(data.test)
    assert set(test_owner.tolist()) == {0, 1, 2}  # every owner is held out a little
    total = sum(data.num_examples(c) for c in range(3)) + data.test.num_rows
    assert total == len(pack(text_files(cfg), ByteTokenizer(), 16).ids)


def test_natural_partition_needs_one_client_per_owner(folder):
    cfg = DataConfig(dataset="text", path=str(folder), partition="natural")
    with pytest.raises(ValueError, match=r"the data has 3 owners but clients.num_clients=5; set clients.num_clients=3"):
        build_federated_dataset(cfg, num_clients=5, seed=0)


def test_owner_selection_by_name_and_by_size():
    corpus = TextCorpus(("a", "b", "c", "d"), (("x" * 5,), ("x" * 50,), ("x" * 20,), ("x" * 30,)))
    assert select_owners(corpus, DataConfig(max_owners=2)).owners == ("b", "d")
    assert select_owners(corpus, DataConfig(owners=["c", "a"])).owners == ("a", "c")
    assert select_owners(corpus, DataConfig(owners=["a", "b", "c"], max_owners=1)).owners == ("b",)
    with pytest.raises(ValueError, match=r"data.owners: no owner named \['e'\]"):
        select_owners(corpus, DataConfig(owners=["e"]))


@pytest.mark.parametrize(
    "files, path, expected",
    [
        ({}, None, "data.path is required by data.dataset=text"),
        ({}, "missing", "data.path: no such file or folder: {root}/missing"),
        ({"d/a.csv": "x"}, "d", "data.path: {root}/d/a.csv is not one of ['.txt', '.jsonl']"),
        ({"d/a.jsonl": '{"text": "ok"}\n{oops\n'}, "d", "data.path: {root}/d/a.jsonl:2 is not valid JSON"),
        ({"d/a.jsonl": '{"body": "ok"}\n'}, "d", "data.path: {root}/d/a.jsonl:1 has no string field 'text' (data.text_field)"),
        ({"d/a.txt": "  \n"}, "d", "data.path: {root}/d/a.txt holds no text"),
        ({"d/.keep": ""}, "d", "data.path: {root}/d is an empty folder"),
    ],
)
def test_bad_text_input_is_named(tmp_path, files, path, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    cfg = DataConfig(dataset="text", path=None if path is None else str(tmp_path / path))
    with pytest.raises(ValueError, match=re.escape(expected.format(root=tmp_path))):
        text_files(cfg)


PLAY = """# A Play

## ACT I

### SCENE I. A heath.

_Thunder. Enter two Witches_

**First Witch**  
When shall we meet again?  
In thunder?

**SECOND WITCH**  
_\\[Aside]_  
When the hurlyburly\\'s done.

_Exit First Witch_

Who comes here?

## ACT II

Nobody speaks this.
"""


def test_a_play_is_split_into_speeches_by_role():
    speeches = parse_play(PLAY)
    assert speeches == {
        "FIRST WITCH": ["When shall we meet again?\nIn thunder?"],
        "SECOND WITCH": ["When the hurlyburly's done.", "Who comes here?"],
    }


def test_the_bundled_plays_give_about_1400_very_uneven_roles():
    corpus = shakespeare(DataConfig(dataset="shakespeare"))
    assert 1300 <= len(corpus.owners) <= 1500
    assert len({o.split("/")[0] for o in corpus.owners}) == 38
    assert "hamlet/HAMLET" in corpus.owners and "macbeth/LADY MACBETH" in corpus.owners
    sizes = corpus.num_chars()
    assert sizes.max() > 50_000 and np.median(sizes) < 2_000
    hamlet = corpus.documents[corpus.owners.index("hamlet/HAMLET")]
    assert any(s.startswith("To be, or not to be") for s in hamlet)
