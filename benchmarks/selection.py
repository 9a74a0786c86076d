"""Selection at scale: seconds per round of each selector over 100,000 client profiles.

    python benchmarks/selection.py [--clients 100000] [--per-round 100] [--rounds 30]

A server's view of 100,000 registered clients (`ClientProfiles`: example counts,
FLASH-like device durations), driven round after round as a run would: select,
then record every selected client's outcome (its loss and simulated duration), so
Oort's explored set, utilities and pacer evolve as in a run. `pareto` plans over
ceil(candidates x K) = 10,000 candidates a round. Reported: the median and worst
seconds per `select` call after the first round (the aim: under 0.25 s each).
No Ray, no training: only what the server spends on choosing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from fedray.config import load_config
from fedray.selection import SELECTORS, ClientProfiles, Outcome, SelectionRequest
from fedray.types import ClientResult

HERE = Path(__file__).resolve().parent


def profiles_for(num_clients: int, seed: int = 0) -> ClientProfiles:
    """Registered clients: log-normal shard sizes and device speeds, as a scale run has."""
    rng = np.random.default_rng([seed, 1])
    examples = (np.floor(rng.lognormal(1.0, 1.0, num_clients)) + 5).astype(np.int64)
    compute = examples * 0.01 * rng.lognormal(0.0, 0.6, num_clients)
    return ClientProfiles.create(examples, compute + rng.lognormal(0.0, 0.5, num_clients), compute,
                                 rng.choice(np.array(["low", "mid", "high"], dtype=object), num_clients))


def drive(selector_name: str, num_clients: int, per_round: int, rounds: int, seed: int = 0,
          overrides: tuple[str, ...] = ()) -> tuple[list[list[int]], list[float]]:
    """(selected ids per round, seconds per select call): `rounds` rounds of selection,
    each selected client's outcome recorded as the round loop would."""
    cfg = load_config(None, [f"server.selection.name={selector_name}", *overrides]).server.selection
    selector = SELECTORS.build(selector_name, cfg)
    profiles = profiles_for(num_clients, seed)
    state, rng = selector.init(num_clients), np.random.default_rng([seed, 0x5E1EC7])
    outcomes = np.random.default_rng([seed, 2])
    available = np.arange(num_clients, dtype=np.int64)
    chosen_per_round, seconds = [], []
    for server_round in range(1, rounds + 1):
        request = SelectionRequest(server_round, available, per_round, profiles)
        started = time.perf_counter()
        chosen, state = selector.select(request, state, rng)
        seconds.append(time.perf_counter() - started)
        chosen_per_round.append(chosen)
        for cid in chosen:
            loss = float(outcomes.uniform(0.1, 2.0))
            result = ClientResult(client_id=cid, server_round=server_round, num_examples=int(profiles.num_examples[cid]),
                                  train_loss=loss, metrics={"loss_sq": loss * loss})
            duration = float(profiles.expected_duration_s[cid])
            profiles.record_round(result, duration, duration * 0.9, duration * 0.1, 0, int(profiles.num_examples[cid]))
            profiles.record_outcome(cid, Outcome.aggregated)
    return chosen_per_round, seconds


CASES = {
    "random": (),
    "oort": (),
    "pareto": ("server.selection.pareto.candidates=100",),  # 100 x K=100: 10,000 candidates
    "power_of_choice": (),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = []
    print(f"| selector ({args.clients:,} clients, {args.per_round}/round) | median s/round | worst s/round |")
    print("|---|---|---|")
    for name, overrides in CASES.items():
        _, seconds = drive(name, args.clients, args.per_round, args.rounds, overrides=overrides)
        after_first = seconds[1:]
        rows.append({"selector": name, "median_s": statistics.median(after_first), "max_s": max(after_first)})
        print(f"| {name} | {rows[-1]['median_s']:.4f} | {rows[-1]['max_s']:.4f} |", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"selection-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
