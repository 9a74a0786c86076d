"""DPO and preference metrics: parity with trl's DPO loss and reward figures, a hand-made
example, the reference as the base with adapters off, and the JSONL pairs rendered through the chat templates."""

import json
import math
import types
from collections import defaultdict

import numpy as np
import pytest
import torch

from fedray.config import load_config
from fedray.config.finetune import Objective
from fedray.config.schema import DataConfig, ModelConfig, PeftConfig
from fedray.data.chat import ChatFormat
from fedray.data.preferences import PreferenceTexts, pair_arrays, preferences, render, tokenize_pairs
from fedray.data.text import PAD, text_info
from fedray.data.tokenize import ByteTokenizer
from fedray.models.build import build_model
from fedray.models.preference import Preference, dpo_loss, preference_metrics, reference, sequence_logps
from tests.unit.data.test_instructions import chatml_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
LLAMA = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
INFO = text_info(seq_len=24, vocab_size=258)


def batch(seed=0, pairs=3, length=12):
    """Random chosen/rejected rows sharing prompts of different lengths, PAD tails."""
    g = torch.Generator().manual_seed(seed)
    chosen, rejected = (torch.randint(0, 257, (pairs, length), generator=g) for _ in range(2))
    prompt_len = torch.tensor([3, 5, 4][:pairs])
    rejected[:, :5] = chosen[:, :5]  # one prompt each
    chosen[0, -2:] = PAD
    rejected[1, -3:] = PAD
    return chosen, rejected, prompt_len


def trl_loss_and_rewards(model, chosen, rejected, prompt_len, ref_chosen, ref_rejected, beta):
    """trl's DPOTrainer loss on these rows (its fused head; the reference log-probs given,
    as trl's `precompute_ref_log_probs` does), without the trainer: a stand-in `self`."""
    from trl.trainer.dpo_trainer import DPOTrainer
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ids = torch.cat([chosen, rejected])
    positions = torch.arange(ids.shape[1])
    completion = (positions[None] >= torch.cat([prompt_len, prompt_len])[:, None]) & (ids >= 0)
    inputs = {"input_ids": ids.clamp_min(0), "attention_mask": (ids >= 0).long(),
              "completion_mask": completion.long(), "ref_chosen_logps": ref_chosen,
              "ref_rejected_logps": ref_rejected}
    same = lambda x: x  # noqa: E731  (one process: gathering is the identity)
    stub = types.SimpleNamespace(
        model=model, accelerator=types.SimpleNamespace(device=torch.device("cpu"), gather=same, gather_for_metrics=same),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False, label_smoothing=0.0,
        _metrics=defaultdict(lambda: defaultdict(list)), _total_train_tokens=0, _tp_size=1)
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    metrics = stub._metrics["train"]
    return loss, metrics["rewards/accuracies"][0], metrics["rewards/margins"][0]


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_and_reward_figures_match_trl(beta):
    model = build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA)), INFO, seed=0).train()
    data = batch()
    chosen, rejected, _ = Preference(Objective.dpo, beta).logps(model, data)
    ref_chosen, ref_rejected = chosen.detach() + torch.tensor([0.3, -2.0, 1.0]), rejected.detach() - 0.7
    ours = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta).mean()
    theirs, accuracy, margin = trl_loss_and_rewards(model, *data, ref_chosen, ref_rejected, beta)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    figures = preference_metrics(chosen.detach(), rejected.detach(), ref_chosen, ref_rejected, beta)
    assert figures["reward_accuracy"] == pytest.approx(accuracy)
    assert figures["reward_margin"] == pytest.approx(margin, rel=1e-5)
    assert figures["loss"] == pytest.approx(float(theirs), rel=1e-5)


def test_preference_metrics_on_a_hand_made_example():
    chosen, rejected = torch.tensor([-1.0, -5.0, -2.0, -3.0]), torch.tensor([-2.0, -4.0, -2.5, -3.0])
    ref_chosen, ref_rejected = torch.tensor([-1.0, -6.0, -2.0, -2.0]), torch.tensor([-1.5, -4.0, -2.0, -3.0])
    figures = preference_metrics(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    # the policy prefers chosen in pairs 0 and 2 (pair 1: lower, pair 3: a tie is no preference)
    assert figures["accuracy"] == 0.5
    # implicit reward differences: 0.5 * ((c - rc) - (r - rr)) = [0.25, 0.5, 0.25, -0.5]
    assert figures["reward_margin"] == pytest.approx((0.25 + 0.5 + 0.25 - 0.5) / 4)
    assert figures["reward_accuracy"] == 0.75
    expected = np.mean([-math.log(1 / (1 + math.exp(-m))) for m in (0.25, 0.5, 0.25, -0.5)])
    assert figures["loss"] == pytest.approx(expected)


def test_only_completion_tokens_are_scored():
    ids = torch.tensor([[5, 6, 7, 8, PAD]])
    logits = torch.randn(1, 5, 10)
    total, count = sequence_logps(logits, ids, torch.tensor([2]))
    logps = torch.log_softmax(logits, -1)
    assert count.item() == 2  # tokens 7 and 8: not the prompt, not the PAD
    assert total.item() == pytest.approx((logps[0, 1, 7] + logps[0, 2, 8]).item())
    changed = logits.clone()
    changed[0, 0] += 5  # the prediction of a prompt token, and the one after the PAD, do not count
    changed[0, 4] -= 5
    assert sequence_logps(changed, ids, torch.tensor([2]))[0].item() == pytest.approx(total.item())


def test_the_reference_is_the_base_with_the_adapters_off():
    peft = PeftConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    model = build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA), peft=peft), INFO, seed=0).eval()
    base = build_model(ModelConfig(name="hf_causal_lm", config=dict(LLAMA)), INFO, seed=0).eval()
    task, data = Preference(Objective.dpo, 0.1), batch()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # the adapter now changes the model
        policy = task.logps(model, data)[0]
        with reference(model):
            ref = task.logps(model, data)[0]
        torch.testing.assert_close(ref, task.logps(base, data)[0])
    assert not torch.allclose(policy, ref)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)  # adapters back on


def test_pairs_from_jsonl_tokenise_prompt_then_completion(tmp_path):
    records = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"},
               {"prompt": "3*3=", "chosen": "9", "rejected": "6 (wrong)"}]
    (tmp_path / "site_a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    texts = preferences(DataConfig(dataset="preferences", path=str(tmp_path)))
    assert texts.owners == ("site_a",)
    fmt = ChatFormat.for_tokenizer(ByteTokenizer())  # no template of its own: the plain layout
    prompt = "### User:\n3*3=\n\n### Assistant:\n"
    pairs = tokenize_pairs(texts, fmt, seq_len=48)
    chosen, rejected, prompt_len = pair_arrays(pairs.table(np.arange(2)))
    assert list(prompt_len) == [len(prompt)] * 2
    ids, start = render("3*3=", "6 (wrong)", fmt)
    assert start == len(prompt) and list(rejected[1, : len(ids)]) == list(ids) and (rejected[1, len(ids):] == PAD).all()
    assert ids[-1] == ByteTokenizer.eos_id and bytes(chosen[1, :start + 1].astype(np.uint8)).decode() == prompt + "9"
    with pytest.raises(ValueError, match=f"data.seq_len=20: the prompt of pair 1 of site_a takes {start} tokens"):
        tokenize_pairs(texts, fmt, seq_len=20)
    (tmp_path / "site_a.jsonl").write_text(json.dumps({"prompt": "x", "chosen": "y"}) + "\n")
    with pytest.raises(ValueError, match=r"site_a.jsonl:1 needs string fields \['prompt', 'chosen', 'rejected'\]"):
        preferences(DataConfig(dataset="preferences", path=str(tmp_path)))


def test_pairs_render_through_the_chat_template_and_only_the_replies_are_scored():
    """A tokenizer with its own (ChatML) template: each row is what chat.py renders for
    the conversation user: prompt, assistant: completion, and DPO's log-probabilities
    take gradient from the reply tokens' predictions alone."""
    fmt = ChatFormat.for_tokenizer(chatml_tokenizer())
    texts = PreferenceTexts(("site",), ((("2+2?", "4", "five"),),))
    pairs = tokenize_pairs(texts, fmt, seq_len=96)
    chosen, rejected, prompt_len = (torch.as_tensor(a) for a in pair_arrays(pairs.table(np.arange(1))))
    for row, reply in ((chosen[0], "4"), (rejected[0], "five")):
        prompt, response = fmt.encode([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": reply}])
        assert bytes(prompt.astype(np.uint8)).decode() == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        assert bytes(response.astype(np.uint8)).decode() == f"{reply}<|im_end|>\n"
        end = len(prompt) + len(response)
        assert row[:end].tolist() == [*prompt, *response] and (row[end:] == PAD).all()
        assert prompt_len.item() == len(prompt)
        logits = torch.randn(1, 96, 258, requires_grad=True)
        total, count = sequence_logps(logits, row[None], prompt_len)
        total.sum().backward()
        # position t predicts token t+1: the reply's tokens are predicted from prompt_len-1 on
        scored = torch.nonzero(logits.grad.abs().sum(-1)[0]).flatten().tolist()
        assert scored == list(range(len(prompt) - 1, end - 1)) and count.item() == len(response)


@pytest.mark.parametrize("overrides, message", [
    (["train.objective=dpo", "model.peft.r=4"], "train.objective=dpo needs data.dataset=preferences"),
    (["train.objective=dpo", "data.dataset=preferences"], "set model.peft"),
    (["train.beta=0"], "train.beta must be > 0, got 0"),
])
def test_dpo_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["model.name=hf_causal_lm", "model.config.model_type=llama", *overrides])
