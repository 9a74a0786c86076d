"""Knowledge transfer on text is checked before Ray starts: exit 2, the key, the file."""

import pytest
import yaml

from fedray.cli.main import main
from tests.conftest import REPO

CONFIG = f"{REPO}/configs/fedfm_text.yaml"
GENERATE = ["server.distill.public.source=generate", "server.distill.pretrain_steps=0"]


def validate(capsys, *overrides):
    code = main(["validate", CONFIG, *overrides])
    return code, capsys.readouterr().err


def test_the_text_config_validates(capsys):
    assert validate(capsys)[0] == 0
    assert validate(capsys, *GENERATE)[0] == 0


@pytest.mark.parametrize("overrides, expected", [
    (["server.distill.public.num_sequences=0"], "server.distill.public.num_sequences must be >= 1, got 0"),
    (["server.distill.public.top_p=1.5"], "server.distill.public.top_p must be in (0, 1], got 1.5"),
    (["server.distill.public.refresh_every=-1"], "server.distill.public.refresh_every must be >= 0, got -1"),
    ([*GENERATE, "server.distill.public.refresh_every=2", "server.mode=async", "server.buffer_size=2"],
     "server.distill.public.refresh_every needs server.mode=sync"),
    (["server.distill.public.source=generate"],
     "server.distill.pretrain_steps trains on a real public set; with server.distill.public.source=generate"),
    ([*GENERATE, "server.distill.public.seq_len=8", "server.distill.public.prompts=[ROMEO.,JULIET_CAPULET.]"],
     "server.distill.public.prompts[1] is 16 tokens with the leading end-of-document token, not shorter "
     "than server.distill.public.seq_len=8"),
    ([*GENERATE, "server.foundation_model.model={name: mlp}"],
     "server.distill.public.source=generate: the foundation model (mlp) cannot generate text; "
     "it must be a causal LM"),
    ([*GENERATE, "data.dataset=digits", "data.partition=iid", "model.name=mlp", "model.peft=null",
      "server.foundation_model.model.name=mlp"],
     "server.distill.public.source=generate samples text, which needs a tokenizer: data.dataset=digits "
     "is a 'classification' dataset without one"),
    (["server.foundation_model.model.config.vocab_size=300"],
     "vocabulary mismatch: the clients' vocabulary is data.tokenizer=byte: 257 tokens, logits over 257; "
     "the foundation model's is logits over 300, reading the same data.tokenizer ids"),
])
def test_bad_knowledge_transfer_settings_exit_2_naming_the_key(capsys, overrides, expected):
    code, err = validate(capsys, *overrides)
    assert code == 2
    assert expected in err and CONFIG in err and "Traceback" not in err


def test_a_foundation_model_with_another_tokenizer_of_the_same_size_is_a_mismatch(capsys, tmp_path):
    """257 tokens on both sides, but not the same tokens: logits would be compared id by
    id between unrelated tokens, so the run is refused with both vocabularies named."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(256)} | {"</s>": 256}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(words, unk_token="w0")),
                                        eos_token="</s>")
    LlamaForCausalLM(LlamaConfig(vocab_size=257, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = yaml.safe_load(open(CONFIG))
    config["server"]["foundation_model"]["model"] = {"name": "hf_causal_lm", "path": str(tmp_path)}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    assert main(["validate", str(tmp_path / "exp.yaml")]) == 2
    err = capsys.readouterr().err
    assert (f"the clients' vocabulary is data.tokenizer=byte: 257 tokens, logits over 257; the foundation "
            f"model's is the tokenizer of {tmp_path}: 257 tokens, logits over 257") in err
