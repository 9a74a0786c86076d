"""The backdoor attack: the trigger, the poisoned shard, attack success; its config checks."""

import pytest
import torch

from fedray.client.attacks import ATTACKS
from fedray.config import ConfigError, load_config
from fedray.config.schema import AttackConfig
from fedray.lifecycle.backdoor import attack_success, poison, stamp, trigger_features


def test_the_trigger_sets_its_features_and_nothing_else():
    x = torch.zeros(3, 2, 4)  # e.g. images: flattened per example
    out = stamp(x, AttackConfig(trigger=[0, 7], trigger_value=0.5))
    assert out.shape == x.shape and torch.all(x == 0)
    flat = out.reshape(3, -1)
    assert torch.all(flat[:, [0, 7]] == 0.5) and flat.sum() == 3 * 2 * 0.5
    assert trigger_features(AttackConfig(), 64).tolist() == [60, 61, 62, 63]  # default: the last four


def test_poison_relabels_the_chosen_share_the_same_way_every_time():
    x, y = torch.zeros(10, 8), torch.arange(10) % 3 + 1
    cfg = AttackConfig(name="backdoor", trigger=[1], target=0, fraction=0.3)
    px, py = poison(x, y, cfg, num_classes=4)
    changed = (py != y).nonzero().flatten()
    assert len(changed) == 3 and torch.all(py[changed] == 0)
    assert torch.all(px[changed, 1] == 1.0) and px.sum() == 3
    again = poison(x, y, cfg, num_classes=4)
    assert torch.equal(again[0], px) and torch.equal(again[1], py)
    built = ATTACKS.build("backdoor").data((x, y), cfg, 4)
    assert torch.equal(built[1], py)


def test_attack_success_counts_triggered_inputs_sent_to_the_target():
    class Trigger(torch.nn.Module):
        """Predicts class 0 when feature 5 is set, else class 1."""

        def forward(self, x):
            return torch.stack([x[:, 5], 0.5 * torch.ones(len(x))], dim=1)

    x, y = torch.zeros(6, 8), torch.tensor([0, 1, 1, 2, 2, 2])
    cfg = AttackConfig(trigger=[5], target=0)
    assert attack_success(Trigger(), x, y, cfg) == 1.0  # the five inputs not of class 0
    assert attack_success(Trigger(), x, y, AttackConfig(trigger=[6], target=0)) == 0.0


def test_bad_backdoor_settings_are_config_errors():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["clients.attack.fraction=0", "clients.attack.target=-1", "clients.excluded=[3,10]"])
    expected = [
        "clients.attack.fraction must be in (0, 1], got 0.0",
        "clients.attack.target must be a label >= 0, got -1",
        "clients.excluded [10] are not client ids in [0, 10)",
    ]
    assert len(err.value.problems) == 3
    assert all(p.startswith(e) for p, e in zip(err.value.problems, expected)), err.value.problems
    with pytest.raises(ValueError, match=r"trigger \[64\] must index the 64 input features"):
        trigger_features(AttackConfig(trigger=[64]), 64)
    with pytest.raises(ValueError, match="label clients.attack.target=5 among its 4 classes"):
        poison(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), AttackConfig(target=5), num_classes=4)
