"""Power-of-choice (Cho, Wang and Joshi, "Towards Understanding Biased Client Selection
in Federated Learning", AISTATS 2022).

Draw `d = ceil(candidates x K)` clients without replacement, in proportion to
their example counts, and keep the K with the highest local loss. Losses are the
ones clients reported in their last round (the paper's communication-free
variant); a client never seen counts as the highest, so it is tried first.
"""

from __future__ import annotations

import numpy as np

from fedray.config.schema import SelectionConfig
from fedray.selection.base import SELECTORS, Selector, SelectionRequest, draw_candidates, require_profiles


@SELECTORS.register("power_of_choice")
def power_of_choice(cfg: SelectionConfig) -> Selector:
    factor = cfg.power_of_choice.candidates

    def init(num_clients: int):
        return ()

    def select(request: SelectionRequest, state, rng: np.random.Generator):
        profiles = require_profiles(request, "power_of_choice")
        sizes = np.maximum(profiles.num_examples[request.available], 1).astype(np.float64)
        candidates, k = draw_candidates(request, factor, rng, weights=sizes)
        loss = np.nan_to_num(profiles.last_train_loss[candidates], nan=np.inf)
        order = np.lexsort((np.arange(len(candidates)), -loss))  # highest loss first; ties: draw order
        return [int(c) for c in candidates[order[:k]]], state

    return Selector(init, select)
