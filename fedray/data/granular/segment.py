"""Granular-ball segmentation of images (GrBFL, arXiv 2501.04940), vectorised over a batch.

Each image is made gray, blurred lightly and rounded to 0-255 integers; then,
until every pixel belongs to a ball, the uncovered pixel with the smallest
Sobel gradient seeds a new ball (ties broken by a seeded random order), a
rectangle grown around the seed as far as three constraints allow:

- purity: at least `purity` of its pixels lie within `threshold` of the seed's value;
- variance: its intensity variance is at most `var_threshold`;
- it covers no pixel of an earlier ball, so every pixel ends in exactly one ball.

Sums over rectangles come from summed-area tables (integral images), so each
test is O(1) and exact in integers. The extent is found by a two-dimensional
binary search: the largest square around the seed first, then each side pushed
out by its own binary search, horizontal sides first or vertical sides first,
whichever rectangle is larger. Sides move independently (unlike GrBFL's
seed-centred rectangles, whose original code lets balls overlap): next to an
earlier ball a centred rectangle could not grow at all, and the exact cover
would shatter into single pixels. Binary search presumes feasibility is
monotone in the extent, which holds for the overlap constraint and nearly for
the others; a rectangle is only ever accepted after passing every test, so each
ball satisfies all three.

All images of a chunk advance in lockstep (one ball per image per step), which
turns the per-ball work into numpy operations over the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fedray.config.granular import GranularConfig
from fedray.data.granular.edges import touching

NODE_FEATURES = ("centre_row", "centre_col", "mean", "variance", "height", "width", "max", "min")
"""Per ball: centre (row, column) as a share of the image's extent, mean, max and min
intensity in [0, 1], variance over `var_threshold`, height and width as a share of
the image's."""

_COVERED = 2
"""Row of the covered mask in a chunk's stacked summed-area tables."""
_CORNER_SIGNS = np.array([1, -1, -1, 1])
"""A rectangle's sum from its four corners in a summed-area table."""

_CHUNK = 512
"""Images segmented in lockstep: big enough to amortise numpy's per-call cost,
small enough that a chunk's integral images stay in cache-sized arrays."""


@dataclasses.dataclass(frozen=True)
class Granules:
    """The balls of a batch of images, as flat arrays with per-image offsets."""

    boxes: np.ndarray
    """int16 [balls, 4]: first row, first column, last row, last column (inclusive)."""
    seeds: np.ndarray
    """int16 [balls, 2]: the seed pixel (row, column) each ball grew from."""
    features: np.ndarray
    """float32 [balls, len(NODE_FEATURES)]."""
    edges: np.ndarray
    """int32 [edges, 2]: pairs i < j of touching balls, numbered within their image."""
    node_offsets: np.ndarray
    """int64 [images + 1]: image k's balls are rows node_offsets[k]:node_offsets[k+1]."""
    edge_offsets: np.ndarray
    """int64 [images + 1]: image k's edges, likewise."""

    @property
    def num_nodes(self) -> np.ndarray:
        """Balls per image."""
        return np.diff(self.node_offsets)

    def image(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes, features, edges) of image k."""
        nodes = slice(self.node_offsets[k], self.node_offsets[k + 1])
        return self.boxes[nodes], self.features[nodes], self.edges[self.edge_offsets[k] : self.edge_offsets[k + 1]]


def to_gray(images: np.ndarray) -> np.ndarray:
    """[N, H, W] float64 intensities from [N, H, W] gray or [N, H, W, 3] RGB images
    (ITU-R BT.601 luma, as OpenCV's BGR2GRAY)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 4 and images.shape[-1] == 3:
        return images @ np.array([0.299, 0.587, 0.114])
    if images.ndim != 3:
        raise ValueError(f"images must be [N, H, W] or [N, H, W, 3], got shape {images.shape}")
    return images


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """A 3x3 Gaussian blur (separable, borders reflected as OpenCV's default)."""
    if sigma == 0:
        return images
    taps = np.exp(-0.5 * (np.array([-1.0, 0.0, 1.0]) / sigma) ** 2)
    taps /= taps.sum()
    out = images
    for axis in (1, 2):
        padded = np.pad(out, [(0, 0)] + [(1, 1) if a == axis else (0, 0) for a in (1, 2)], mode="reflect")
        lo, mid, hi = (np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i in range(3))
        out = taps[0] * lo + taps[1] * mid + taps[2] * hi
    return out


def gradient(images: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, 0.5 |d/dx| + 0.5 |d/dy| (GrBFL's seed criterion)."""
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1)], mode="reflect")
    h, w = images.shape[1:]

    def window(dr: int, dc: int) -> np.ndarray:
        return padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    gx = (window(-1, 1) + 2 * window(0, 1) + window(1, 1)) - (window(-1, -1) + 2 * window(0, -1) + window(1, -1))
    gy = (window(1, -1) + 2 * window(1, 0) + window(1, 1)) - (window(-1, -1) + 2 * window(-1, 0) + window(-1, 1))
    return 0.5 * np.abs(gx) + 0.5 * np.abs(gy)


def prepare_images(images: np.ndarray, cfg: GranularConfig) -> np.ndarray:
    """What the balls are fitted to: gray, blurred, rounded to integers on the 0-255
    scale (as OpenCV's 8-bit blur), so rectangle sums are exact."""
    return np.rint(blur(to_gray(images), cfg.blur_sigma)).astype(np.int64)


def segment(images: np.ndarray, cfg: GranularConfig) -> Granules:
    """Granular balls of every image ([N, H, W] or [N, H, W, 3], intensities 0-255)."""
    prepared = prepare_images(images, cfg)
    h, w = prepared.shape[1:]
    rank = np.random.default_rng(cfg.seed).permutation(h * w)
    parts = [_segment_chunk(prepared[i : i + _CHUNK], rank, cfg) for i in range(0, len(prepared), _CHUNK)]
    return _concat(parts) if parts else _empty()


# ---- one chunk in lockstep ----------------------------------------------------------


def integral(values: np.ndarray) -> np.ndarray:
    """[B, (H+1)(W+1)] flat summed-area tables: [b, i*(W+1) + j] = values[b, :i, :j].sum()."""
    b, h, w = values.shape
    out = np.zeros((b, h + 1, w + 1), dtype=np.int64)
    np.cumsum(np.cumsum(values, axis=1, dtype=np.int64), axis=2, out=out[:, 1:, 1:])
    return out.reshape(b, -1)


class _Search:
    """The constraint tests of one step, for every image still segmenting.

    Rectangle sums come from summed-area tables: the chunk's own (intensity, its
    square, the covered mask) and this step's table of the pixels within
    `threshold` of each seed. Intensities are integers, so the sums are exact.
    """

    def __init__(self, img, tables, active, rows, cols, cfg: GranularConfig):
        n, h, w = img.shape
        self.h, self.w, self.cfg = h, w, cfg
        self.rows, self.cols = rows, cols
        centre = img[np.arange(n), rows, cols]
        self.pure = integral(np.abs(img - centre[:, None, None]) <= cfg.threshold).ravel()
        self.tables = tables.ravel()
        size = (h + 1) * (w + 1)
        self.bases = (active * tables.shape[1] * size)[:, None, None] + (np.arange(3) * size)[None, :, None]
        self.pure_bases = (np.arange(n) * size)[:, None]

    def box(self, up, down, left, right) -> tuple[np.ndarray, ...]:
        """(r0, c0, r1, c1): the seed extended by `up`, `down`, `left`, `right`
        pixels, clipped to the image."""
        return (np.maximum(self.rows - up, 0), np.maximum(self.cols - left, 0),
                np.minimum(self.rows + down, self.h - 1), np.minimum(self.cols + right, self.w - 1))

    def feasible(self, up, down, left, right) -> np.ndarray:
        r0, c0, r1, c1 = self.box(up, down, left, right)
        stride = self.w + 1
        corners = np.stack([(r1 + 1) * stride + c1 + 1, r0 * stride + c1 + 1,
                            (r1 + 1) * stride + c0, r0 * stride + c0], axis=1)
        total, square, covered = (self.tables.take(self.bases + corners[:, None, :]) @ _CORNER_SIGNS).T
        pure = self.pure.take(self.pure_bases + corners) @ _CORNER_SIGNS
        area = (r1 - r0 + 1) * (c1 - c0 + 1)
        return ((covered == 0) & (pure / area >= self.cfg.purity)
                & (area * square - total * total <= self.cfg.var_threshold * area * area))

    @staticmethod
    def grow(lo: np.ndarray, hi: np.ndarray, test) -> np.ndarray:
        """The largest value in [lo, hi] that passes `test`, by binary search from a
        `lo` that passes."""
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi + 1) // 2
            ok = test(mid)
            lo = np.where(open_ & ok, mid, lo)
            hi = np.where(open_ & ~ok, mid - 1, hi)

    def extents(self) -> list[np.ndarray]:
        """[up, down, left, right]: the largest square around the seed, then each side
        pushed out in turn, horizontal sides first or vertical sides first, whichever
        ends with the larger rectangle."""
        reach = [self.rows, self.h - 1 - self.rows, self.cols, self.w - 1 - self.cols]
        k = self.grow(np.zeros_like(self.rows), np.max(reach, axis=0), lambda m: self.feasible(m, m, m, m))
        candidates = []
        for order in ((3, 2, 1, 0), (1, 0, 3, 2)):
            sides = [np.minimum(k, r) for r in reach]
            for side in order:
                def test(m, side=side):
                    return self.feasible(*(m if i == side else s for i, s in enumerate(sides)))
                sides[side] = self.grow(sides[side], reach[side], test)
            candidates.append(sides)
        first = self._area(candidates[0]) >= self._area(candidates[1])
        return [np.where(first, a, b) for a, b in zip(*candidates)]

    def _area(self, sides):
        r0, c0, r1, c1 = self.box(*sides)
        return (r1 - r0 + 1) * (c1 - c0 + 1)


def _segment_chunk(img: np.ndarray, rank: np.ndarray, cfg: GranularConfig) -> Granules:
    b, h, w = img.shape
    tables = np.stack([integral(img), integral(img * img), integral(np.zeros_like(img))], axis=1)
    # a covered pixel's gradient is +inf, so the flattest open pixel is the minimum
    open_grad = gradient(img.astype(np.float64)).reshape(b, h * w)
    labels = np.full((b, h * w), -1, dtype=np.int32)
    boxes = np.zeros((b, h * w, 4), dtype=np.int16)
    seeds = np.zeros((b, h * w, 2), dtype=np.int16)
    pixel_rows, pixel_cols = np.divmod(np.arange(h * w), w)
    image_rows, image_cols = np.arange(h), np.arange(w)
    edge_rows, edge_cols = np.arange(h + 1), np.arange(w + 1)
    step = 0
    while True:
        flattest = open_grad.min(axis=1)
        active = np.flatnonzero(flattest < np.inf)
        if not active.size:
            break
        # while every image is still segmenting (most steps), slices avoid copies
        sel = slice(None) if active.size == b else active
        g = open_grad[sel]
        seed = np.where(g == flattest[sel, None], rank, h * w).argmin(axis=1)
        rows, cols = pixel_rows[seed], pixel_cols[seed]
        search = _Search(img[sel], tables, active, rows, cols, cfg)
        r0, c0, r1, c1 = search.box(*search.extents())
        in_rows = (image_rows >= r0[:, None]) & (image_rows <= r1[:, None])
        in_cols = (image_cols >= c0[:, None]) & (image_cols <= c1[:, None])
        inside = (in_rows[:, :, None] & in_cols[:, None, :]).reshape(len(active), -1)
        labels[sel] = np.where(inside, step, labels[sel])
        open_grad[sel] = np.where(inside, np.inf, g)
        # the covered mask's table gains the rectangle's: the outer product of how
        # many rows and columns each table prefix shares with it
        row_part = np.clip(edge_rows[None, :] - r0[:, None], 0, (r1 - r0 + 1)[:, None])
        col_part = np.clip(edge_cols[None, :] - c0[:, None], 0, (c1 - c0 + 1)[:, None])
        tables[sel, _COVERED] += (row_part[:, :, None] * col_part[:, None, :]).reshape(len(active), -1)
        boxes[sel, step] = np.stack([r0, c0, r1, c1], axis=1)
        seeds[sel, step] = np.stack([rows, cols], axis=1)
        step += 1
    counts = labels.max(axis=1) + 1
    return _describe(img, labels, boxes[:, :step], seeds[:, :step], counts, cfg)


def _describe(img, labels, boxes, seeds, counts, cfg: GranularConfig) -> Granules:
    """Node features from every ball's pixels, and the touching pairs as edges."""
    b, h, w = img.shape
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    valid = np.arange(boxes.shape[1])[None, :] < counts[:, None]
    boxes, seeds = boxes[valid], seeds[valid]
    ball = (labels + offsets[:-1, None]).ravel()
    values = img.reshape(-1)
    size = np.bincount(ball, minlength=offsets[-1])
    mean = np.bincount(ball, weights=values, minlength=offsets[-1]) / size
    var = np.maximum(np.bincount(ball, weights=values * values, minlength=offsets[-1]) / size - mean**2, 0)
    order = np.argsort(ball, kind="stable")
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    high = np.maximum.reduceat(values[order], starts)
    low = np.minimum.reduceat(values[order], starts)
    height, width = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    features = np.stack([
        (boxes[:, 0] + boxes[:, 2]) / 2 / max(h - 1, 1),
        (boxes[:, 1] + boxes[:, 3]) / 2 / max(w - 1, 1),
        mean / 255, var / max(cfg.var_threshold, 1.0), height / h, width / w, high / 255, low / 255,
    ], axis=1).astype(np.float32)
    edges = [touching(boxes[offsets[k] : offsets[k + 1]]) for k in range(b)]
    edge_offsets = np.concatenate([[0], np.cumsum([len(e) for e in edges])]).astype(np.int64)
    return Granules(boxes, seeds, features, np.concatenate(edges).astype(np.int32).reshape(-1, 2),
                    offsets, edge_offsets)


def _empty() -> Granules:
    none = np.zeros(1, dtype=np.int64)
    return Granules(np.zeros((0, 4), np.int16), np.zeros((0, 2), np.int16),
                    np.zeros((0, len(NODE_FEATURES)), np.float32), np.zeros((0, 2), np.int32), none, none)


def _concat(parts: list[Granules]) -> Granules:
    def offsets(name: str) -> np.ndarray:
        shifts = np.cumsum([0] + [getattr(p, name)[-1] for p in parts[:-1]])
        return np.concatenate([[0]] + [getattr(p, name)[1:] + s for p, s in zip(parts, shifts)]).astype(np.int64)

    return Granules(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in ("boxes", "seeds", "features", "edges")),
        node_offsets=offsets("node_offsets"),
        edge_offsets=offsets("edge_offsets"),
    )
