"""SCAFFOLD with SGD momentum on the quickstart config: accuracy per round (issue 29).

Runs configs/quickstart.yaml (20 rounds, 10 clients, momentum 0.5 there) with
server.strategy scaffold at train.momentum 0.5 and 0, on one local Ray, and prints each
run's accuracy per round. `python benchmarks/scaffold_momentum.py [OUT_DIR]`.
"""

from __future__ import annotations

import sys
import tempfile

from fedray.config import load_config
from fedray.launcher import prepare, run


def accuracies(momentum: float, out: str) -> list[float]:
    """Held-out accuracy after each round of one SCAFFOLD run."""
    cfg = load_config("configs/quickstart.yaml", [f"output_dir={out}", f"name=scaffold-m{momentum}",
                                                  "server.strategy.name=scaffold", f"train.momentum={momentum}",
                                                  "clients.resources.num_cpus=0.1"])
    lines: list[str] = []
    run(prepare(cfg), console=lambda line: lines.append(line) if line.startswith("round") else None)
    return [float(line.split("accuracy ")[1].split(" ")[0]) for line in lines]


def main() -> None:
    import ray

    out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for momentum in (0.5, 0.0):
            found = accuracies(momentum, out)
            print(f"momentum {momentum}: final {found[-1]:.4f}; per round {found}", flush=True)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
