"""Hand-built client profiles for selector tests."""

import numpy as np
import pytest

from fedray.selection.profiles import ClientProfiles


def build_profiles(num_examples, duration, loss=None, compute=None, client_type=None, last_round=None):
    """Profiles as a server would hold them after some rounds: `loss` NaN = never seen."""
    n = len(num_examples)
    duration = np.asarray(duration, dtype=float)
    profiles = ClientProfiles.create(
        np.asarray(num_examples), duration,
        duration if compute is None else np.asarray(compute, dtype=float), client_type,
    )
    if loss is not None:
        loss = np.asarray(loss, dtype=float)
        profiles.last_train_loss[:] = loss
        profiles.last_loss_sq[:] = loss ** 2
        seen = ~np.isnan(loss)
        profiles.last_duration_s[seen] = duration[seen]
        profiles.last_round[seen] = 1 if last_round is None else np.asarray(last_round)[seen]
        profiles.times_selected[seen] = 1
    assert profiles.num_clients == n
    return profiles


@pytest.fixture
def profiles_factory():
    return build_profiles
