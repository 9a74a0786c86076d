"""Pictures of what GrBFL clients see: sample images with their balls, and nodes per image."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from fedray.config.granular import GranularConfig
from fedray.data.arrow import to_numpy
from fedray.data.federated import FederatedDataset
from fedray.data.granular.graphs import boxes_of, graph_arrays, segment_table
from fedray.data.granular.segment import NODE_FEATURES

MEAN = NODE_FEATURES.index("mean")


@dataclasses.dataclass(frozen=True)
class GranulesFigure:
    """What `show_granules` drew."""

    path: Path
    clients: tuple[int, ...]
    nodes_per_image: np.ndarray
    """Balls of every image of the drawn clients' shards."""
    pixels_per_image: int


def render(boxes: np.ndarray, means: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The image as its balls see it: every ball filled with its mean intensity."""
    out = np.zeros(shape, dtype=np.float32)
    for (r0, c0, r1, c1), mean in zip(boxes, means):
        out[r0 : r1 + 1, c0 : c1 + 1] = mean
    return out


def boxes_from_features(features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The rectangles a graph's node features encode (centre and extent as shares of the
    image, `segment._describe`'s normalisation undone): everything of a ball's place that
    a GrBFL client's input carries, so rendering these is what an attacker who recovered
    that input exactly could draw."""
    h, w = shape
    rows, cols = NODE_FEATURES.index("centre_row"), NODE_FEATURES.index("centre_col")
    height = np.rint(features[:, NODE_FEATURES.index("height")] * h)
    width = np.rint(features[:, NODE_FEATURES.index("width")] * w)
    r0 = np.rint(features[:, rows] * max(h - 1, 1) - (height - 1) / 2)
    c0 = np.rint(features[:, cols] * max(w - 1, 1) - (width - 1) / 2)
    return np.stack([r0, c0, r0 + height - 1, c0 + width - 1], axis=1).astype(np.int64)


def render_nodes(features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The image rebuilt from its node features alone: each ball's rectangle filled with
    its mean intensity (0-1)."""
    return render(boxes_from_features(features, shape), features[:, MEAN], shape)


def show_granules(dataset: FederatedDataset, granular: GranularConfig | None, out: str | os.PathLike,
                  cache_dir: str | os.PathLike | None = None, num_clients: int = 3,
                  per_client: int = 4) -> GranulesFigure:
    """Segment the first `num_clients` clients' shards (or read them from the cache) and
    draw `per_client` images of each, spread over the shard: pixels with the balls
    outlined, then the balls alone; below, the histogram of balls per image over
    those shards."""
    shape = dataset.info.image_shape
    if len(shape) != 2:
        raise ValueError("show-granules draws image datasets (mnist5k, idx, digits); this one has no image shape")
    granular = granular or GranularConfig()
    clients = tuple(range(min(num_clients, dataset.num_clients)))
    samples, counts = [], []
    for cid in clients:
        shard = dataset.shard(cid)
        graphs = segment_table(shard, shape, granular, cache_dir)
        arrays, (boxes, _) = graph_arrays(graphs), boxes_of(graphs)
        counts.append(np.diff(arrays.node_offsets))
        x, _ = to_numpy(shard)
        for k in np.unique(np.linspace(0, len(x) - 1, per_client).astype(int)):  # spread over the shard
            nodes = slice(arrays.node_offsets[k], arrays.node_offsets[k + 1])
            samples.append((cid, int(arrays.y[k]), x[k].reshape(shape), boxes[nodes], arrays.nodes[nodes, MEAN]))
    nodes_per_image = np.concatenate(counts)
    path = Path(out)
    _draw(path, samples, nodes_per_image, shape, len(clients), per_client)
    return GranulesFigure(path, clients, nodes_per_image, int(np.prod(shape)))


def _draw(path: Path, samples: list, nodes_per_image: np.ndarray, shape: tuple[int, int],
          rows: int, per_client: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig = plt.figure(figsize=(2.0 * per_client * 2 * 0.75, 1.6 * rows + 2.4))
    grid = fig.add_gridspec(rows + 1, 2 * per_client, height_ratios=[1.0] * rows + [1.4])
    drawn = sorted({s[0] for s in samples})
    for i, (cid, label, image, boxes, means) in enumerate(samples):
        row, col = drawn.index(cid), sum(1 for s in samples[:i] if s[0] == cid)
        pixels, balls = fig.add_subplot(grid[row, 2 * col]), fig.add_subplot(grid[row, 2 * col + 1])
        pixels.imshow(image, cmap="gray", vmin=0, vmax=1)
        for r0, c0, r1, c1 in boxes:
            pixels.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1,
                                       fill=False, linewidth=0.4, edgecolor="tab:orange"))
        balls.imshow(render(boxes, means, shape), cmap="gray", vmin=0, vmax=1)
        pixels.set_title(f"client {cid}, label {label}", fontsize=7)
        balls.set_title(f"{len(boxes)} balls", fontsize=7)
        for ax in (pixels, balls):
            ax.set_xticks([])
            ax.set_yticks([])
    hist = fig.add_subplot(grid[rows, :])
    hist.hist(nodes_per_image, bins=30, color="tab:blue")
    hist.axvline(float(np.median(nodes_per_image)), color="tab:orange", linestyle="--",
                 label=f"median {np.median(nodes_per_image):.0f} of {int(np.prod(shape))} pixels")
    hist.set_xlabel("balls (graph nodes) per image")
    hist.set_ylabel("images")
    hist.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
