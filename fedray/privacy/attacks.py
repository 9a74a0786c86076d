"""Attacks that measure privacy: what an adversary can learn from a model or an update.

- Loss-threshold membership inference (Yeom et al. 2018): an example the model was
  trained on tends to have a lower loss. The attack's power over all thresholds is
  the ROC AUC of -loss between members and non-members: 0.5 is a coin flip.
- Update inversion (Phong et al. 2017): for a fully connected first layer
  y = W x + b, one example's gradient has dL/dW_i = (dL/db_i) x for every row i, so
  the input is recovered exactly as row i of the weight update divided by entry i
  of the bias update. Clipping and noise (DP) are what stop it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def example_losses(model: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Cross-entropy of each example under `model` (float64)."""
    model.eval()
    return F.cross_entropy(model(inputs), labels, reduction="none").double().cpu().numpy()


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties (Mann-Whitney U)."""
    scores = np.concatenate([positive, negative])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def membership_auc(model: torch.nn.Module, members: tuple, non_members: tuple) -> float:
    """AUC of the loss-threshold attack: members (x, y) scored against non-members (x, y)."""
    return roc_auc(-example_losses(model, *members), -example_losses(model, *non_members))


def invert_first_layer(weight_update: np.ndarray, bias_update: np.ndarray) -> np.ndarray:
    """The input recovered from one example's update of a linear first layer (its row
    with the largest bias change, where noise matters least)."""
    row = int(np.argmax(np.abs(bias_update)))
    return weight_update[row] / bias_update[row]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
