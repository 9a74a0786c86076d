"""The two bugs of the authors' released segmentation (AIGNLAI/GrBFL `img2graph.py`), measured
on fedray's GrBFL-default balls of 200 MNIST-5k images.

    python benchmarks/grbfl_authors_bugs.py

- Edges: their test joins balls i and j when |row_i - row_j| - 1 < var_i + var_j and
  |col_i - col_j| - 1 < mean_i + mean_j (a ball's variance and mean where its radii
  belong). Counted per image against the same test with radii and fedray's touching rule.
- Variance: their summed-area table of squares adds `img[i][j]**2` on a uint8 image, so
  squares wrap modulo 256. Counted: image windows whose true variance breaks the limit
  (20) but pass it with wrapped squares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedray.config.granular import GranularConfig  # noqa: E402
from fedray.data.granular.segment import segment  # noqa: E402
from fedray.data.images import mnist5k  # noqa: E402

VAR_LIMIT = 20.0
"""GrBFL's default variance threshold."""


def edge_counts(image: np.ndarray, boxes: np.ndarray) -> tuple[int, int]:
    """(pairs joined by the released test, pairs joined by the same test with radii)."""
    r0, c0, r1, c1 = (boxes[:, k].astype(float) for k in range(4))
    rows, cols = (r0 + r1) / 2, (c0 + c1) / 2
    half_h, half_w = (r1 - r0) / 2, (c1 - c0) / 2
    cells = [image[int(a) : int(c) + 1, int(b) : int(d) + 1] for a, b, c, d in boxes]
    mean, var = np.array([x.mean() for x in cells]), np.array([x.var() for x in cells])
    row_gap = np.abs(rows[:, None] - rows[None]) - 1
    col_gap = np.abs(cols[:, None] - cols[None]) - 1
    upper = np.triu(np.ones((len(boxes),) * 2, bool), 1)
    released = (row_gap < var[:, None] + var[None]) & (col_gap < mean[:, None] + mean[None]) & upper
    radii = (row_gap < half_h[:, None] + half_h[None] + 1) & (col_gap < half_w[:, None] + half_w[None] + 1) & upper
    return int(released.sum()), int(radii.sum())


def wrapped_variance_passes(images: np.ndarray) -> tuple[int, int, int]:
    """(windows, windows with true variance >= the limit, of those the ones that pass
    when the squares are taken in uint8), over 3x3, 5x5 and 7x7 windows, stride 2."""
    total = high = passed = 0
    for img in images.astype(np.uint8):
        wrapped = (img ** 2).astype(np.float64)  # uint8 ** 2 wraps, as in the authors' table
        pixels = img.astype(np.float64)
        for size in (3, 5, 7):
            for i in range(0, img.shape[0] - size + 1, 2):
                for j in range(0, img.shape[1] - size + 1, 2):
                    window = pixels[i : i + size, j : j + size]
                    total += 1
                    if window.var() >= VAR_LIMIT:
                        high += 1
                        passed += wrapped[i : i + size, j : j + size].mean() - window.mean() ** 2 < VAR_LIMIT
    return total, high, passed


def main() -> None:
    data = mnist5k(None)
    rows = np.random.default_rng(0).permutation(len(data.y))[:200]
    images = np.rint(data.x[rows].reshape(-1, 28, 28) * 255.0)
    balls = segment(images, GranularConfig())
    counts = [edge_counts(images[k], balls.image(k)[0]) for k in range(len(images))]
    touching = np.diff(balls.edge_offsets).mean()
    print(f"balls per image {balls.num_nodes.mean():.1f}; edges per image: touching {touching:.0f}, "
          f"released test {np.mean([c[0] for c in counts]):.0f}, with radii {np.mean([c[1] for c in counts]):.0f}")
    total, high, passed = wrapped_variance_passes(images)
    print(f"windows with variance >= {VAR_LIMIT:g}: {high} of {total}; passing with uint8 squares: "
          f"{passed} ({passed / high:.1%})")


if __name__ == "__main__":
    main()
