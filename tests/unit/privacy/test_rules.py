"""The combinations fedray refuses: one test per row of `REFUSALS`, generated from the
table, and the docs page that lists them kept equal to it."""

import pathlib

import pytest

from fedray.config import load_config
from fedray.privacy.build import build_secure_params, secagg_plus_defaults
from fedray.privacy.rules import REFUSALS, combinations_page, privacy_problems
from tests.conftest import REPO


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.keys for r in REFUSALS])
def test_every_refusal_in_the_table_is_found_by_its_check(refusal):
    cfg = load_config(None, list(refusal.example))
    found = privacy_problems(cfg)
    assert any(refusal.match in problem for problem in found), found
    assert refusal.check(cfg) is not None  # its own check, not another row's, finds it


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.keys for r in REFUSALS])
def test_each_refusal_needs_both_halves_of_its_combination(refusal):
    """Without its privacy key (the example's first override) the same config is accepted
    by that row: the refusal is about the combination, not either key alone."""
    cfg = load_config(None, list(refusal.example[1:]))
    assert refusal.check(cfg) is None


def test_the_docs_page_is_the_table():
    page = pathlib.Path(REPO, "docs", "guides", "combinations.md").read_text()
    assert page == combinations_page(), "regenerate: python -m fedray.privacy.rules > docs/guides/combinations.md"


@pytest.mark.parametrize("clients_per_round", [2, 3, 5, 10, 100, 1000])
def test_secagg_plus_defaults_follow_the_round_size(clients_per_round):
    derived = secagg_plus_defaults(clients_per_round)
    k, t = derived["num_neighbours"], derived["threshold"]
    assert k % 2 == 0 and 2 <= t <= k  # what secagg_plus itself requires
    assert k <= max(2, clients_per_round - 1)
    assert t > k // 2  # a majority of a client's neighbours reconstructs its secrets


def test_secagg_plus_alone_validates_with_derived_defaults():
    cfg = load_config(None, ["server.secure_aggregation.name=secagg_plus", "server.clients_per_round=10"])
    params = build_secure_params(cfg)
    assert (params.num_neighbours, params.threshold) == tuple(secagg_plus_defaults(10)[k] for k in
                                                                 ("num_neighbours", "threshold"))
    assert privacy_problems(cfg) == []
    given = load_config(None, ["server.secure_aggregation={name: secagg_plus, args: {num_neighbours: 4}}"])
    assert build_secure_params(given).num_neighbours == 4  # what the config says wins
