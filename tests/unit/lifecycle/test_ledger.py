"""The update ledger's tables: codecs, norms, hashes, and reading a round back."""

import numpy as np
import pyarrow as pa
import pytest

from fedray.config.lifecycle import LedgerConfig
from fedray.lifecycle.ledger import (
    CODECS,
    layer_norms,
    ledger_file_name,
    ledger_file_round,
    model_hash,
    read_round,
    round_table,
)

SIZES = (6, 3, 11)


def accepted(seed=0):
    rng = np.random.default_rng(seed)
    return [(c, float(w), rng.normal(0, 1, sum(SIZES)).astype(np.float32)) for c, w in ((1, 30.0), (4, 12.5), (7, 3.0))]


@pytest.mark.parametrize("codec, tolerance", [("float32", 0.0), ("float16", 1e-3), ("int8", 1e-2)])
def test_a_round_reads_back(codec, tolerance):
    updates = accepted()
    table = round_table(5, updates, "before", "after", codec, SIZES)
    stored = read_round(table, "round_000005.parquet")
    assert (stored.server_round, stored.base_hash, stored.model_hash) == (5, "before", "after")
    assert stored.clients == (1, 4, 7) and stored.layer_sizes == SIZES and stored.num_params == 20
    np.testing.assert_array_equal(stored.weights, [30.0, 12.5, 3.0])
    for i, (_, _, update) in enumerate(updates):
        decoded = stored.update(i)
        assert decoded.dtype == np.float32
        np.testing.assert_allclose(decoded, update, atol=tolerance * np.abs(update).max(), rtol=0)
        # norms are kept exactly, whatever the codec loses
        np.testing.assert_allclose(stored.layer_norms[i], layer_norms(update, SIZES))
        assert stored.norms[i] == pytest.approx(float(np.linalg.norm(update.astype(np.float64))))


def test_smaller_codecs_store_fewer_bytes():
    sizes = {codec: sum(len(b) for b in read_round(round_table(1, accepted(), "a", "b", codec, SIZES), "x").encoded)
             for codec in CODECS}
    assert sizes["float32"] == 2 * sizes["float16"] == 4 * sizes["int8"] == 3 * 4 * 20


def test_layer_norms_split_the_update_by_tensor():
    update = np.array([3, 4, 0, 0, 5, 12], np.float32)
    np.testing.assert_allclose(layer_norms(update, (2, 2, 2)), [5.0, 0.0, 13.0])


def test_the_model_hash_is_bit_exact():
    params = np.linspace(0, 1, 100, dtype=np.float32)
    nudged = params.copy()
    nudged[50] = np.nextafter(nudged[50], np.float32(2))
    assert model_hash(params) == model_hash(params.copy()) != model_hash(nudged)


def test_file_names_carry_the_round():
    assert ledger_file_name(12) == "round_000012.parquet"
    assert ledger_file_round("round_000012.parquet") == 12
    assert ledger_file_round(".round_000012.parquet.tmp") is None


def test_tables_that_are_not_one_ledger_round_are_refused():
    with pytest.raises(ValueError, match="metrics.parquet is not a fedray ledger file"):
        read_round(pa.table({"round": [1]}), "metrics.parquet")
    two = pa.concat_tables([round_table(1, accepted(), "a", "b", "float32", SIZES),
                            round_table(2, accepted(), "b", "c", "float32", SIZES)])
    with pytest.raises(ValueError, match="must hold exactly one round"):
        read_round(two, "both.parquet")


def test_the_ledger_records_every_nth_round_from_the_first():
    assert [r for r in range(1, 11) if LedgerConfig(every=3).records(r)] == [1, 4, 7, 10]
    assert not any(LedgerConfig(every=0).records(r) for r in range(1, 5))
    assert LedgerConfig(every=-1, codec="zip").errors() == [
        "server.ledger.every must be >= 0 (0: no ledger), got -1",
        "server.ledger.codec must be one of ['float32', 'float16', 'int8'], got 'zip'",
    ]
