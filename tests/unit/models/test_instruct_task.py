"""The instruct_lm task: response-only loss, greedy generation, answer scoring."""

import types

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from fedray.config.schema import DataConfig
from fedray.data.instructions import ChatExample, Conversations, encode_conversations, instruction_table
from fedray.data.tokenize import ByteTokenizer
from fedray.models.generate import greedy_generate
from fedray.models.instruct_task import InstructLM, score_answer
from fedray.models.tasks import masked_lm_loss, masked_row_scores

import transformers  # noqa: E402


def tiny_llama(vocab: int = 257, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval()


def rows(pairs, seq_len=64, owner="t"):
    examples = tuple(ChatExample(({"role": "user", "content": q}, {"role": "assistant", "content": a}), a)
                     for q, a in pairs)
    data = encode_conversations(Conversations((owner,), (examples,)), ByteTokenizer(),
                                DataConfig(dataset="instructions", seq_len=seq_len))
    return data, instruction_table(data, np.arange(len(examples)))


def test_the_loss_is_the_mean_nll_of_the_response_tokens_only():
    data, table = rows([("2+2?", "4"), ("Name a colour", "red")])
    model = tiny_llama()
    prepared = InstructLM(ByteTokenizer()).prepare(table, torch.device("cpu"))
    ids, mask = prepared.ids, prepared.loss_mask
    with torch.no_grad():
        logits = model(input_ids=ids.clamp_min(0), attention_mask=ids >= 0).logits
        terms = [-F.log_softmax(logits[r, p - 1], -1)[ids[r, p]] for r, p in zip(*np.nonzero(mask.numpy()))]
        expected = torch.stack(terms).mean()
        loss = masked_lm_loss(model, ids, mask)
    assert len(terms) == len("4") + 1 + len("red") + 1  # each response and its end token
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    changed = ids.clone()
    changed[0, : data.prompt_len[0] - 1] = ord("z")  # the prompt is context, not target: its labels do not count
    with torch.no_grad():
        assert not torch.isclose(masked_lm_loss(model, changed, mask), loss)
        everything = masked_lm_loss(model, ids, ids >= 0)
    assert not torch.isclose(everything, loss)


def test_columns_of_padding_alone_are_not_computed_and_change_nothing():
    data, table = rows([("2+2?", "4"), ("Name a colour", "red")], seq_len=96)
    model = tiny_llama()
    prepared = InstructLM(ByteTokenizer()).prepare(table, torch.device("cpu"))
    ids, mask = prepared.ids, prepared.loss_mask
    longest = int((ids >= 0).sum(1).max())
    assert longest < ids.shape[1] - 30  # the rows really are padded
    widths = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    with torch.no_grad():
        loss = masked_lm_loss(model, ids, mask)
        nll, hits, count = masked_row_scores(model, ids, mask, batch_size=2)
    hook.remove()
    assert widths == [longest, longest]
    with torch.no_grad():  # the same model over every column, padding included
        logits = model(input_ids=ids.clamp_min(0), attention_mask=ids >= 0).logits[:, :-1]
        full = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:].clamp_min(0), reduction="none") * mask[:, 1:]
    torch.testing.assert_close(loss, full.sum() / mask[:, 1:].sum(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nll, full.sum(1).double(), rtol=1e-5, atol=1e-5)
    assert count.tolist() == mask[:, 1:].sum(1).tolist()


def test_batched_greedy_decoding_matches_generate_one_prompt_at_a_time():
    model = tiny_llama(seed=1)
    prompts = [np.array([5, 6, 7, 8, 9, 10]), np.array([40, 41]), np.array([100, 3, 99])]
    projected = []  # positions the vocabulary projection ran on, per forward pass
    hook = model.lm_head.register_forward_hook(lambda m, a, out: projected.append(out.shape[1]))
    batched = greedy_generate(model, prompts, max_new_tokens=6, eos_id=256, batch_size=3)
    hook.remove()
    assert projected and set(projected) == {1}  # the prompts' pass included: last position only
    for prompt, got in zip(prompts, batched):
        ref = model.generate(torch.from_numpy(prompt[None]), max_new_tokens=6, do_sample=False, eos_token_id=256,
                             pad_token_id=256)[0, len(prompt):]
        ref = ref[: int(torch.nonzero(ref == 256)[0])] if (ref == 256).any() else ref
        assert got.tolist() == ref.tolist()


class Answers(torch.nn.Module):
    """A stand-in language model that writes `text` and then ends, whatever it is asked."""

    def __init__(self, text: str):
        super().__init__()
        self.script = [*text.encode(), ByteTokenizer.eos_id]
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids, cache=None, use_cache=True):
        step = 0 if cache is None else cache
        logits = torch.zeros(len(input_ids), input_ids.shape[1], 257)
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 1.0
        return types.SimpleNamespace(logits=logits, cache=step + 1)


def test_generated_answers_are_scored_per_task_by_exact_match():
    _, first = rows([("2+2?", "4"), ("3+3?", "6")], owner="add")
    _, second = rows([("1+3?", " 4 ")], owner="more")
    task = InstructLM(ByteTokenizer(), max_new_tokens=4, eval_examples=8)
    data = task.prepare(pa.concat_tables([first, second]), torch.device("cpu"))
    scores = task.generation_scores(Answers("4"), data)
    assert scores == {"accuracy": pytest.approx(2 / 3), "acc/add": 0.5, "acc/more": 1.0}
    assert task.columns(data) == ("acc/add", "acc/more")
    assert score_answer(" Paris\n", "paris", "") == 1.0 and score_answer("Lyon", "Paris", "") == 0.0


def test_a_packed_batch_has_the_loss_and_gradients_of_the_same_conversations_padded():
    """data.instruct.packing: conversations one after another in a row, positions from 0
    each; attention does not cross them, so loss and gradients are the padded batch's."""
    pairs = [("2+2?", "4"), ("Name a colour", "red"), ("Echo hello there", "hello there"), ("1+1?", "2"),
             ("Spell cat backwards", "tac")]
    data, table = rows(pairs, seq_len=128)
    padded = InstructLM(ByteTokenizer()).prepare(table, torch.device("cpu"))
    ids, mask, positions = InstructLM(ByteTokenizer(), packing=True).prepare(table, torch.device("cpu")).packed
    lengths = (padded.ids >= 0).sum(1)
    assert len(ids) < len(pairs) and ids.shape[1] == 128 and (ids >= 0).sum() == lengths.sum()
    starts = torch.nonzero((positions == 0) & (ids >= 0)).tolist()
    assert len(starts) == len(pairs) and any(r > 0 for r, c in starts) and any(c > 0 for r, c in starts)
    # the response-only mask is kept: the same target tokens, in the same order
    assert ids[mask].tolist() == padded.ids[padded.loss_mask].tolist()

    model = tiny_llama()

    def loss_and_grads(*batch):
        model.zero_grad()
        loss = masked_lm_loss(model, *batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads(padded.ids, padded.loss_mask)
    packed_loss, packed_grads = loss_and_grads(ids, mask, positions)
    torch.testing.assert_close(packed_loss, loss, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(packed_grads, grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # one causal sequence per row instead: conversations see each other
        assert not torch.isclose(masked_lm_loss(model, ids, mask), loss)


@pytest.mark.parametrize("overrides, message", [
    (["data.instruct.packing=true"], r"data.instruct.packing packs conversations: it needs data.dataset in "
                                      r"\['instructions', 'reasoning_gym'\], got digits"),
    (["data.instruct.packing=true", "data.dataset=reasoning_gym", "model.name=mlp"],
     "data.instruct.packing needs model.name=hf_causal_lm"),
    (["data.instruct.packing=true", "data.dataset=reasoning_gym", "model.name=hf_causal_lm",
      "model.config.model_type=llama", "train.dp.noise_multiplier=1.0"],
     "data.instruct.packing cannot be combined with train.dp"),
])
def test_packing_config_errors(overrides, message):
    from fedray.config import load_config

    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)
