"""Derive fedray's bundled trace table from the FLASH files (run once, by hand).

    python benchmarks/derive_flash_trace.py /path/to/traces/flash fedray/hetero/traces/flash.csv

Inputs (github.com/PKU-Chengxu/FLASH, BSD-2-Clause): `benchmark2score.json` (307
phones -> AI-Benchmark score), `raw_ai_benchmark_list.json` (their release year),
`speed_distri.json` (19 users' down/up network speed, mean and sigma, kbit/s).

Output: one row per phone, in fedray's trace schema (see fedray/hetero/devices.py).
FLASH has no joint device-and-network trace: it assigns both to a client
independently. The table pairs phone i (by name) with network user i mod 19 (by
id) only to stay rectangular; fedray's loader draws a client's compute columns
and network columns from two independent rows, as FLASH does.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def derive(source: Path, out: Path) -> None:
    scores = json.loads((source / "benchmark2score.json").read_text())
    years = {r["Model"]: r["Year"] for r in json.loads((source / "raw_ai_benchmark_list.json").read_text())}
    speeds = json.loads((source / "speed_distri.json").read_text())
    users = sorted(speeds)
    ranked = sorted(scores.values())
    low, high = ranked[len(ranked) // 3], ranked[2 * len(ranked) // 3]
    rows = []
    for i, device in enumerate(sorted(scores, key=str.strip)):
        score = scores[device]
        user = users[i % len(users)]
        net = speeds[user]
        rows.append({
            "device": device.strip(),
            "year": years.get(device, ""),
            "compute_score": score,
            "client_type": "low" if score < low else "mid" if score < high else "high",
            "network_user": user[:8],
            "down_kbps": round(net["down_u"], 1),
            "down_sigma_kbps": round(net["down_sigma"], 1),
            "up_kbps": round(net["up_u"], 1),
            "up_sigma_kbps": round(net["up_sigma"], 1),
        })
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
