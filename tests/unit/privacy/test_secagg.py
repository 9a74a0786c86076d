"""SecAgg+ end to end in one process: the unmasked sum is the plain sum of the encodings,
exactly, whoever drops out (up to n - t), and a masked input alone looks uniform."""

import numpy as np
import pytest

from fedray.privacy.secagg import shamir
from fedray.privacy.secagg.aggregate import SecureSum
from fedray.privacy.secagg.client import ClientSession
from fedray.privacy.secagg.messages import AdvertiseKeys, Params
from fedray.privacy.secagg.server import SecAggError, ServerRound, ring_neighbours
from fedray.privacy.secagg.sessions import encode

D = 50


def seeded(seed, client_id):
    """A deterministic source of a session's secret bytes (a run uses os.urandom)."""
    rng = np.random.default_rng([seed, client_id])
    return rng.bytes


def run_protocol(n, params, drop_before_input=(), drop_before_unmask=(), seed=0):
    """Every stage for n clients; returns (unmasked sum, plain sum of the survivors'
    encodings, survivors, aggregator)."""
    rng = np.random.default_rng(seed)
    sessions = {c: ClientSession(c, 1, seeded(seed, c)) for c in range(n)}
    server = ServerRound.start(1, params, range(n))
    keys = {c: s.advertise(AdvertiseKeys(1)) for c, s in sessions.items()}
    shared = {c: sessions[c].share(m) for c, m in server.share_requests(keys).items()}
    instructions = server.mask_instructions(shared)
    aggregator = SecureSum(D, params)
    aggregator.begin(server.num_levels)
    plain = np.zeros(D + 1, dtype=np.uint64)
    for c in sorted(instructions):
        encoded = encode(rng.normal(0, 0.3, D).astype(np.float32), 10 + c, params, server.num_levels, rng)
        masked = sessions[c].mask(encoded, instructions[c])
        if c in drop_before_input:
            continue
        aggregator.add(c, 1.0, masked)
        plain += encoded
    request = server.unmask_request(aggregator.clients)
    revealed = {u: sessions[u].unmask(request) for u in request.survivors if u not in drop_before_unmask}
    total = aggregator.unmask(server.correction(request, revealed, D + 1))
    return total, plain, request, aggregator


PARAMS = Params(threshold=3, num_neighbours=4, bits=32, clip_range=1.0)


@pytest.mark.parametrize("dropped", [(), (2,), (0, 3)], ids=["none", "one", "n-t"])
def test_sum_is_exact_with_dropouts_before_the_masked_input(dropped):
    n = 5  # complete graph: 4 neighbours each; t = 3 so n - t = 2 may drop
    total, plain, request, _ = run_protocol(n, PARAMS, drop_before_input=dropped)
    assert request.dropped == tuple(sorted(dropped))
    np.testing.assert_array_equal(total, plain)


def test_a_survivor_that_drops_before_unmasking_is_recovered_from_shares():
    total, plain, request, aggregator = run_protocol(6, PARAMS, drop_before_input=(1,), drop_before_unmask=(4,))
    np.testing.assert_array_equal(total, plain)
    assert 4 in request.survivors and aggregator.num_added == 5


def test_the_ring_limits_who_shares_with_whom_and_the_sum_still_holds():
    params = Params(threshold=2, num_neighbours=2, bits=40, clip_range=0.5)
    assert ring_neighbours(list(range(6)), 2)[0] == [1, 5]
    total, plain, _, _ = run_protocol(8, params, drop_before_input=(3,))
    np.testing.assert_array_equal(total, plain)


def test_fewer_than_t_shares_fail_with_a_clear_message():
    with pytest.raises(SecAggError, match=r"only 2 share\(s\) of client \d's self-mask seed .* threshold t=3"):
        run_protocol(5, PARAMS, drop_before_unmask=(0, 1, 2))
    with pytest.raises(ValueError, match=r"only 2 masked input\(s\) in the sum, fewer than t=3"):
        run_protocol(5, PARAMS, drop_before_input=(0, 1, 2))  # the clients refuse to unmask


def test_too_few_clients_to_share_fail_at_setup():
    server = ServerRound.start(1, PARAMS, range(2))
    keys = {c: ClientSession(c, 1, seeded(0, c)).advertise(AdvertiseKeys(1)) for c in range(2)}
    with pytest.raises(SecAggError, match="2 client.* advertised keys.*t=3 needs at least t"):
        server.share_requests(keys)


def test_decoded_mean_matches_the_updates_to_quantisation_precision():
    rng = np.random.default_rng(1)
    params = Params(threshold=2, num_neighbours=2, bits=48, clip_range=1.0, max_weight=100.0)
    n = 4
    sessions = {c: ClientSession(c, 1, seeded(0, c)) for c in range(n)}
    server = ServerRound.start(1, params, range(n))
    shared = {c: sessions[c].share(m) for c, m in server.share_requests(
        {c: s.advertise(AdvertiseKeys(1)) for c, s in sessions.items()}).items()}
    instructions = server.mask_instructions(shared)
    aggregator = SecureSum(D, params)
    aggregator.begin(server.num_levels)
    updates = [rng.normal(0, 0.2, D).astype(np.float32) for _ in range(n)]
    examples = [10, 20, 50, 200]  # weights 0.1, 0.2, 0.5, 1.0
    for c in range(n):
        aggregator.add(c, 1.0, sessions[c].mask(encode(updates[c], examples[c], params, server.num_levels, rng),
                                                instructions[c]))
    request = server.unmask_request(aggregator.clients)
    aggregator.unmask(server.correction(request, {u: sessions[u].unmask(request) for u in range(n)}, D + 1))
    weights = np.array([0.1, 0.2, 0.5, 1.0])
    expected = (weights[:, None] * np.clip(updates, -1, 1)).sum(0) / weights.sum()
    np.testing.assert_allclose(aggregator.result()[0], expected, atol=1e-9)


def test_a_single_masked_input_is_statistically_uniform():
    """Chi-square test of one client's masked vector (an all-zero update) over 16 bins of
    Z_2^32: a fixed seed, so the test is deterministic; p > 0.001."""
    from scipy.stats import chisquare

    params = Params(threshold=2, num_neighbours=2, bits=32, clip_range=1.0)
    sessions = {c: ClientSession(c, 1, seeded(0, c)) for c in range(3)}
    server = ServerRound.start(1, params, range(3))
    shared = {c: sessions[c].share(m) for c, m in server.share_requests(
        {c: s.advertise(AdvertiseKeys(1)) for c, s in sessions.items()}).items()}
    instructions = server.mask_instructions(shared)
    zeros = np.zeros(20_000, dtype=np.uint64)
    masked = sessions[0].mask(zeros, instructions[0]).data
    counts = np.bincount((masked >> np.uint64(28)).astype(np.int64), minlength=16)
    assert chisquare(counts).pvalue > 1e-3
    assert len(np.unique(masked)) > 19_900  # no structure of the zero input survives


def test_a_client_refuses_to_reveal_both_secrets_of_one_neighbour():
    from fedray.privacy.secagg.messages import Unmask

    session = ClientSession(0, 1, seeded(0, 0))
    session.params = PARAMS
    with pytest.raises(ValueError, match="both in the sum and dropped"):
        session.unmask(Unmask(1, (1, 2, 3), (3,)))


def test_a_seeded_session_is_deterministic_and_seeds_differ():
    """What the seeded tests rely on: the same seed gives the same secrets, another seed others."""
    one, again = ClientSession(0, 1, seeded(0, 0)), ClientSession(0, 1, seeded(0, 0))
    other = ClientSession(0, 1, seeded(1, 0))
    assert (one.seed, one.mask_private, one.cipher_private) == (again.seed, again.mask_private, again.cipher_private)
    assert one.seed != other.seed and one.mask_private != other.mask_private


def test_shamir_needs_t_shares_and_any_t_will_do():
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5], seeded(0, 0))
    assert shamir.combine(shares[2:], 3) == secret
    assert shamir.combine([shares[0], shares[4], shares[2]], 3) == secret
    with pytest.raises(ValueError, match="do not reconstruct"):
        shamir.combine(shares[:2] + [shares[3]._replace(y=shares[3].y + 1)], 3)
    with pytest.raises(ValueError, match="2 share"):
        shamir.combine(shares[:2], 3)
