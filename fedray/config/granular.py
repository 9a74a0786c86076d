"""The `data.granular` section: how images are segmented into granular balls (GrBFL)."""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass
class GranularConfig:
    """Granular-ball segmentation of images into region graphs (GrBFL, arXiv 2501.04940).

    Intensities are on the 0-255 scale whatever the dataset stores, so the
    thresholds mean the same on every image dataset (GrBFL's defaults: purity
    0.9, threshold 10, variance 20).
    """

    purity: float = 0.9
    """Least share of a ball's pixels within `threshold` of its seed pixel, in (0, 1]."""
    threshold: float = 10.0
    """Intensity difference (0-255 scale) within which a pixel counts as pure."""
    var_threshold: float = 20.0
    """Largest intensity variance of a ball (0-255 scale, squared units)."""
    blur_sigma: float = 0.8
    """Sigma of the 3x3 Gaussian blur applied before segmenting (0: no blur)."""
    seed: int = 0
    """Breaks ties between equally flat seed candidates; the same seed gives the same balls."""
    cache_dir: Optional[str] = None
    """Where segmented shards are kept, keyed by a hash of shard and settings (null:
    `<output_dir>/granular_cache`)."""

    def errors(self) -> list[str]:
        out = []
        if not 0 < self.purity <= 1:
            out.append(f"data.granular.purity must be in (0, 1], got {self.purity}")
        if self.threshold < 0:
            out.append(f"data.granular.threshold must be >= 0, got {self.threshold}")
        if self.var_threshold < 0:
            out.append(f"data.granular.var_threshold must be >= 0, got {self.var_threshold}")
        if self.blur_sigma < 0:
            out.append(f"data.granular.blur_sigma must be >= 0, got {self.blur_sigma}")
        return out
