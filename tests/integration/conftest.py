"""Integration tests run on two pytest-xdist workers with the rest of the suite, a file
at a time per worker (`make test`: `-n 2 --dist loadfile`), each worker with its own
local Ray.

The longest files go first: a worker that picks one of them up last would run it alone
while the other idles (on 2 cores the suite's tail was minutes of one worker). The
order below follows the serial wall times of a clean-clone run (longest first); files
not named keep their collection order after these (`make test` names the integration
tests first and the many small in-process test files after them).
"""

from __future__ import annotations

LONGEST_FIRST = (
    "test_cluster.py",
    "test_fedfm_text.py",
    "test_reliability.py",
    "test_foundation.py",
    "test_run.py",
    "test_sites.py",
    "test_dpo.py",
    "test_integrity.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def order(item) -> int:
        in_here = item.path.parent.name == "integration"
        return rank.get(item.path.name, len(rank)) if in_here else len(rank)

    items.sort(key=order)  # stable: everything else keeps its collection order
