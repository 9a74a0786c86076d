"""Instruction data: chat rendering, response-only masks, JSONL owners, truncation counts."""

import json

import numpy as np
import pytest

from fedray.config.instruct import ChatTemplate
from fedray.config.schema import DataConfig
from fedray.data.chat import ChatFormat, messages_of, response_mask
from fedray.data.federated import build_federated_dataset
from fedray.data.instructions import PAD, ChatExample, Conversations, encode_conversations, instruction_files
from fedray.data.tokenize import ByteTokenizer, HFTokenizer, byte_level_hf

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QA = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def chatml_tokenizer() -> HFTokenizer:
    """The byte-level tokenizer with a ChatML template (a tokenizer that has its own)."""
    hf = byte_level_hf()
    hf.chat_template = CHATML
    return HFTokenizer(hf)


def test_alpaca_and_chat_records_become_conversations():
    alpaca = messages_of({"instruction": "Add", "input": "2 and 2", "output": "4", "system": "Be brief"}, "f:1")
    assert alpaca == [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Add\n\n2 and 2"},
                      {"role": "assistant", "content": "4"}]
    assert messages_of({"messages": QA}, "f:2") == QA
    with pytest.raises(ValueError, match="f:3: the last message must be the assistant"):
        messages_of({"messages": QA[:1]}, "f:3")
    with pytest.raises(ValueError, match="f:4: a record needs string fields `instruction` and `output`"):
        messages_of({"prompt": "x"}, "f:4")


def test_the_plain_layout_renders_headers_and_ends_the_response_with_eos():
    fmt = ChatFormat.for_tokenizer(ByteTokenizer(), system="Be brief")
    assert fmt.render_prompt(QA[:1]) == "### System:\nBe brief\n\n### User:\n2+2?\n\n### Assistant:\n"
    prompt, response = fmt.encode(QA)
    assert bytes(prompt.astype(np.uint8)).decode() == fmt.render_prompt(QA[:1])
    assert response.tolist() == [ord("4"), ByteTokenizer.eos_id]


def test_a_tokenizer_template_renders_the_prompt_and_the_response_keeps_its_end_marker():
    fmt = ChatFormat.for_tokenizer(chatml_tokenizer())
    assert fmt.name == "chat_template"
    assert fmt.render_prompt(QA[:1]) == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert fmt.render_response(QA) == "4<|im_end|>\n"
    assert ChatFormat.for_tokenizer(chatml_tokenizer(), template="plain").name == "plain"


def test_the_loss_mask_covers_exactly_the_response_tokens():
    data = Conversations(("a",), ((ChatExample(tuple(QA), "4"),),))
    cfg = DataConfig(dataset="instructions", seq_len=48)
    rows = encode_conversations(data, ByteTokenizer(), cfg)
    prompt = "### User:\n2+2?\n\n### Assistant:\n"
    (ids,), (mask,) = rows.ids, rows.loss_mask
    assert rows.prompt_len.tolist() == [len(prompt)]
    assert ids[: len(prompt) + 2].tolist() == [*prompt.encode(), ord("4"), ByteTokenizer.eos_id]
    assert (ids[len(prompt) + 2:] == PAD).all()
    assert np.flatnonzero(mask).tolist() == [len(prompt), len(prompt) + 1]


def test_responses_are_cut_at_seq_len_and_counted_and_long_prompts_dropped():
    long = ChatExample(({"role": "user", "content": "q"}, {"role": "assistant", "content": "x" * 40}), "x")
    huge = ChatExample(({"role": "user", "content": "q" * 80}, {"role": "assistant", "content": "y"}), "y")
    prompt_len = len("### User:\nq\n\n### Assistant:\n")
    rows = encode_conversations(Conversations(("a",), ((long, huge),)), ByteTokenizer(),
                                DataConfig(dataset="instructions", seq_len=50))
    assert len(rows.ids) == 1 and rows.loss_mask[0].sum() == 50 - prompt_len
    cut = 41 - (50 - prompt_len)  # 40 characters and the end token
    assert f"1 of 2 responses cut to fit data.seq_len=50 ({cut} tokens); 1 conversations dropped" in rows.notes[0]
    assert response_mask(3, 10, 8)[1] == 5


def test_a_folder_of_jsonl_files_is_one_owner_per_file_and_partitions_naturally(tmp_path):
    for name, n in (("alice", 6), ("bob", 9)):
        lines = [json.dumps({"instruction": f"say {i}", "output": f"{name} {i}"}) for i in range(n)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(dataset="instructions", path=str(tmp_path), partition="natural", seq_len=64)
    data = instruction_files(cfg)
    assert data.owners == ("alice", "bob") and [len(e) for e in data.examples] == [6, 9]
    fed = build_federated_dataset(cfg, 2, seed=0)
    assert fed.info.task == "instruct_lm" and fed.owner_names == ("alice", "bob")
    tasks = fed.train.column("task").to_pylist()
    assert tasks[: fed.num_examples(0)] == ["alice"] * fed.num_examples(0)
    assert fed.num_examples(0) + fed.num_examples(1) + fed.test.num_rows == 15


def test_a_bad_record_names_its_file_and_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(QA) + "\n")
    with pytest.raises(ValueError, match=r"a.jsonl:1 is not a JSON object"):
        instruction_files(DataConfig(dataset="instructions", path=str(tmp_path / "a.jsonl")))
    with pytest.raises(ValueError, match="data.path is required by data.dataset=instructions"):
        instruction_files(DataConfig(dataset="instructions"))


def test_template_choice_is_an_enum_in_the_config():
    assert DataConfig(dataset="instructions").instruct.template is ChatTemplate.auto
