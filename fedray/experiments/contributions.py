"""`fedray report`'s contribution section: each client's cumulative contribution and payout.

For every run whose clients.parquet has a `contribution` column (the run valued
its clients with `server.contribution`), a Markdown table (client, cumulative
contribution, payout of `server.contribution.budget`, share) and a bar plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fedray.lifecycle.payout import payout_table, payouts
from fedray.server.rundir import read_parquet
from fedray.server.storage import Location


def contribution_section(records: Sequence, out: Path) -> tuple[str, list[Path]]:
    """(Markdown, PNG files) for the runs that valued their clients; ("", []) if none did."""
    parts, files = [], []
    for record in records:
        clients_file = Location.parse(record.where) / "clients.parquet"
        if not clients_file.exists():
            continue
        table = read_parquet(clients_file).to_pydict()
        if "contribution" not in table:
            continue
        ids, values = table["client_id"], table["contribution"]
        budget = float(record.config.get("server.contribution.budget") or 0.0)
        parts.append(f"## Contributions and payouts: {record.label}\n\n"
                     f"{record.config.get('server.contribution.name', '?')}, summed over rounds; "
                     f"budget {budget:g}\n\n{payout_table(ids, values, budget)}")
        files.append(_bars(ids, values, payouts(values, budget), budget, record.label,
                           out / f"contributions_{record.label.replace('/', '_')}.png"))
    return "\n".join(parts), files


def _bars(ids, values, paid, budget: float, label: str, path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.bar(ids, values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(xlabel="client", ylabel="cumulative contribution", title=f"contribution and payout: {label}")
    if budget > 0:
        twin = ax.twinx()
        twin.plot(ids, paid, "o", color="tab:orange", label="payout")
        twin.set_ylabel("payout")
        twin.set_ylim(bottom=0)
        twin.legend(fontsize="small", loc="upper right")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path)
    return path
