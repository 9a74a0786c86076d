"""Sampling synthetic public text, and how rows are shared among ZeRO ranks."""

import numpy as np
import pytest
import torch

from fedray.foundation.group import equal_shares, shared_gpus
from fedray.foundation.sampling import nucleus_sample, sample_rows, uniforms
from tests.unit.foundation.test_distill import tiny_llama


def test_nucleus_sampling_inverts_the_cdf_of_the_kept_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # top_p=0.8 keeps 0.5 and 0.3 (renormalised to 0.625, 0.375)
    picks = [nucleus_sample(logits, torch.tensor([u]), 1.0, 0.8).item() for u in (0.0, 0.6, 0.63, 0.99)]
    assert picks == [0, 0, 1, 1]
    # a tiny top_p is greedy; top_p=1 reaches the least likely token
    assert nucleus_sample(logits, torch.tensor([0.99]), 1.0, 1e-6).item() == 0
    assert nucleus_sample(logits, torch.tensor([0.99]), 1.0, 1.0).item() == 3


def test_each_rows_draws_depend_on_the_seed_and_the_row_only():
    both = uniforms(5, np.array([3, 9]), 4)
    np.testing.assert_array_equal(uniforms(5, np.array([9]), 4)[0], both[1])
    assert not np.array_equal(uniforms(6, np.array([3]), 4)[0], both[0])


def test_sampled_rows_keep_their_prefix_and_are_deterministic_for_a_seed():
    model = tiny_llama(0, initializer_range=0.5).eval()
    prefix = np.array([256, 82, 79], dtype=np.int64)  # end-of-document, "RO"
    rows = np.arange(4)
    one = sample_rows(model, prefix, rows, 12, temperature=1.0, top_p=0.9, seed=1, device="cpu")
    assert one.shape == (4, 12) and one.dtype == np.int32
    assert (one[:, :3] == prefix).all() and ((one >= 0) & (one < 257)).all()
    np.testing.assert_array_equal(one, sample_rows(model, prefix, rows, 12, 1.0, 0.9, 1, "cpu"))
    assert not np.array_equal(one, sample_rows(model, prefix, rows, 12, 1.0, 0.9, 2, "cpu"))
    assert len({tuple(r) for r in one}) == 4  # rows draw independently


@pytest.mark.parametrize("rows, world", [(10, 2), (7, 3), (1, 2), (0, 2)])
def test_every_rank_gets_an_equal_share_covering_every_row_once(rows, world):
    parts, sizes = equal_shares(rows, world)
    assert len({len(p) for p in parts}) == 1  # the same passes on every rank
    real = np.concatenate([p[:n] for p, n in zip(parts, sizes)])
    np.testing.assert_array_equal(np.sort(real), np.arange(rows))


def test_ranks_sharing_a_gpu_are_named():
    ranks = [{"ip": "10.0.0.1", "node_id": "a", "gpu_ids": ["0"]},
             {"ip": "10.0.0.1", "node_id": "a", "gpu_ids": ["0"]}]
    assert shared_gpus(ranks).startswith("foundation model ranks 0 and 1 share GPU 0 on node 10.0.0.1; NCCL")
    ranks[1]["gpu_ids"] = ["1"]
    assert shared_gpus(ranks) is None
    assert shared_gpus([{"ip": "x", "node_id": "a", "gpu_ids": []}] * 2) is None  # CPU ranks
