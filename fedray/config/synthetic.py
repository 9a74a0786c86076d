"""Config of the generated `synthetic` dataset (`data.synthetic`). Part of `schema.py`'s contract."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class SyntheticConfig:
    """Synthetic(alpha, beta) of the FedProx paper (Li et al., MLSys 2020): every client
    draws its own softmax-regression model and its own input distribution, so any
    number of clients gets data, heterogeneous by as much as `alpha` and `beta` say.
    Used with `data.dataset: synthetic` and `data.partition: natural` (client c's data
    is its own); `data.test_fraction` of each client's examples is held out."""

    alpha: float = 1.0
    """Model heterogeneity: client k's weights and biases are N(u_k, 1) with
    u_k ~ N(0, alpha) (alpha is the standard deviation, as in the authors' generator)."""
    beta: float = 1.0
    """Data heterogeneity: client k's inputs have mean v_k, each entry N(B_k, 1) with
    B_k ~ N(0, beta) (a standard deviation, like alpha)."""
    iid: bool = False
    """Synthetic-IID: one model N(0, 1) for every client and inputs N(0, Sigma);
    `alpha` and `beta` are then unused."""
    num_features: int = 60
    """Input features of every generated example."""
    num_classes: int = 10
    """Classes of the generated softmax-regression task."""
    size_log_mean: float = 4.0
    """Examples per client: floor(LogNormal(size_log_mean, size_log_sigma)) + size_min,
    the power law of the paper's generator (4, 2, 50)."""
    size_log_sigma: float = 2.0
    """Sigma of the log-normal number of examples per client."""
    size_min: int = 50
    """Examples every client has at least, added to the log-normal draw."""
    size_max: int = 10_000
    """Cap on one client's examples (the log-normal's tail is long: without a cap a
    100,000-client draw holds clients with millions)."""

    def errors(self) -> list[str]:
        out = []
        for key in ("alpha", "beta", "size_log_sigma"):
            if getattr(self, key) < 0:
                out.append(f"data.synthetic.{key} must be >= 0, got {getattr(self, key)}")
        if self.num_features < 1:
            out.append(f"data.synthetic.num_features must be >= 1, got {self.num_features}")
        if self.num_classes < 2:
            out.append(f"data.synthetic.num_classes must be >= 2, got {self.num_classes}")
        if self.size_min < 2:
            out.append(f"data.synthetic.size_min must be >= 2 (one example to train on, one to test), "
                       f"got {self.size_min}")
        elif self.size_max < self.size_min:
            out.append(f"data.synthetic.size_max ({self.size_max}) must be >= data.synthetic.size_min "
                       f"({self.size_min})")
        return out
