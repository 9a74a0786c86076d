"""Seconds per training step of `grb_gat` on real granular-ball graphs, the attention
aggregated by sparse products (`fedray.models.gat`, as shipped) and edge by edge (the
layer as first written: messages gathered per edge, weighted, summed per target).

    python benchmarks/gat_step.py [--repeats 7] [--threads 1] [--batch 96]

MNIST-5k images segmented at GrBFL's defaults (read from the segmentation cache of
`benchmarks/grbfl_compare.py` when it is there), one batch of `--batch` graphs, SGD with
momentum as in configs/grbfl_paper.yaml; the authors' width ([16, 32, 64], 16 heads)
and a quarter of it. Median of `--repeats` steps after two warm-up steps, the two
implementations interleaved; the outputs of both are checked to agree first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fedray.models import gat  # noqa: E402

WIDTHS = {"authors' width": ([16, 32, 64], 16), "quarter width": ([8, 16, 32], 8)}


def edge_list_forward(self, h, adjacency):
    """GATLayer.forward with the aggregation written edge by edge."""
    z = self.project(h).view(-1, self.heads, self.width)
    source, target = adjacency.source, adjacency.target
    scores = (z * self.att_source).sum(-1)[source] + (z * self.att_target).sum(-1)[target]
    alpha = gat.segment_softmax(torch.nn.functional.leaky_relu(scores, 0.2), target, h.shape[0])
    messages = (alpha[:, :, None] * z[source]).reshape(-1, self.heads * self.width)
    out = torch.zeros(h.shape[0], self.heads * self.width, device=h.device, dtype=h.dtype)
    return out.index_add_(0, target, messages) + self.bias


def graphs(batch: int):
    from fedray.config import load_config
    from fedray.data.plan import DataSource
    from fedray.models.graph_task import GraphClassification

    cache = Path("/tmp/fedray-grbfl-compare/granular_cache")
    cfg = load_config(REPO / "configs" / "grbfl_paper.yaml", [f"data.granular.cache_dir={cache}"])
    data = DataSource(cfg.data, cfg.model, 1, 0).load()
    task = GraphClassification.from_config(data.info, cfg)
    prepared = task.prepare(data.table(torch.arange(batch).numpy()), torch.device("cpu"))
    index = torch.arange(batch)
    return data.info.num_classes, prepared.collate(index), prepared.y[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=96)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    classes, batch, y = graphs(args.batch)
    shipped = gat.GATLayer.forward
    out = {"batch_graphs": args.batch, "nodes": int(batch.x.shape[0]), "edges": int(batch.edges.shape[0]),
           "threads": args.threads, "repeats": args.repeats, "median_s": {}}
    for label, (widths, heads) in WIDTHS.items():
        torch.manual_seed(0)
        model = gat.GranularBallGAT(batch.x.shape[1], widths, heads, classes)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        with torch.no_grad():
            model.eval()
            sparse = model(batch)
            gat.GATLayer.forward = edge_list_forward
            torch.testing.assert_close(model(batch), sparse, rtol=1e-4, atol=1e-4)
            gat.GATLayer.forward = shipped
            model.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(batch), y).backward()
            optimizer.step()

        times = {"sparse": [], "edge by edge": []}
        for _ in range(2 + args.repeats):
            for name, forward in (("sparse", shipped), ("edge by edge", edge_list_forward)):
                gat.GATLayer.forward = forward
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        gat.GATLayer.forward = shipped
        out["median_s"][label] = {k: round(statistics.median(v[2:]), 3) for k, v in times.items()}
    print(json.dumps(out, indent=2))
    (REPO / "benchmarks" / "results" / "gat_step.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
