"""How well an image can be rebuilt from what a GrBFL client computes on, against what a
pixel model's update reveals (issue 30, part 3).

    python benchmarks/grbfl_inversion.py [--images 300] [--out benchmarks/results/grbfl_inversion.json]
        [--figure docs/grbfl_inversion.png]

Balls: every image segmented (GrBFL's defaults, and the first shipped config's coarse
balls) and rendered back from its node features alone (`render_nodes`: each ball's
rectangle filled with its mean intensity). That is the most any inversion of a graph
model's update could give back, since the model never sees more than those features.

Pixels: fedray's `mlp` (784 -> 64 -> 10). For a first fully connected layer
y = W x + b, the gradient of the loss gives dW[i] = sum_k delta_k[i] x_k and
db[i] = sum_k delta_k[i] over the batch, so dW[i] / db[i] is a weighted mix of the batch's
images, and for batch 1 exactly the image (the classic analytic inversion; no
optimisation). The same holds for any linear combination of such gradients, so for a
whole local round of SGD with momentum (the authors' optimiser) too. Each image is
scored against the best of the 64 rows (the attacker's best case); Adam rescales each
coordinate and breaks the ratio, so it is not attacked here.

Scores against the original image in [0, 1]: PSNR (dB) and SSIM (7x7 uniform window,
K1 0.01, K2 0.03, data range 1, as scikit-image's default), over images; a rebuild
within float rounding is scored EXACT (99 dB).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fedray.config.granular import GranularConfig  # noqa: E402
from fedray.config.schema import DataConfig, ModelConfig  # noqa: E402
from fedray.data.datasets import DataInfo  # noqa: E402
from fedray.data.granular.figure import render_nodes  # noqa: E402
from fedray.data.granular.segment import segment  # noqa: E402
from fedray.data.images import mnist5k  # noqa: E402
from fedray.models.build import mlp  # noqa: E402

SHAPE = (28, 28)
EXACT = 99.0
"""PSNR reported for a rebuild within float rounding of the image (squared error < 1e-10)."""
BALLS = {
    "balls, GrBFL defaults (0.9, 10, 20)": GranularConfig(),
    "balls, first shipped config (0.95, 60, 2000)": GranularConfig(purity=0.95, threshold=60, var_threshold=2000),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return EXACT if mse < 1e-10 else 10 * np.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> float:
    """Mean SSIM over every 7x7 window (sample covariances, as scikit-image)."""
    wa = np.lib.stride_tricks.sliding_window_view(a, (win, win)).reshape(-1, win * win)
    wb = np.lib.stride_tricks.sliding_window_view(b, (win, win)).reshape(-1, win * win)
    ma, mb = wa.mean(1), wb.mean(1)
    n = win * win
    va, vb = wa.var(1) * n / (n - 1), wb.var(1) * n / (n - 1)
    cov = ((wa - ma[:, None]) * (wb - mb[:, None])).sum(1) / (n - 1)
    c1, c2 = 0.01**2, 0.03**2
    return float(np.mean((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))))


def scores(originals: np.ndarray, rebuilt: np.ndarray) -> dict:
    p = [psnr(o, r) for o, r in zip(originals, rebuilt)]
    s = [ssim(o, r) for o, r in zip(originals, rebuilt)]
    return {"psnr_median": float(np.median(p)), "psnr_mean": float(np.mean(p)), "psnr_min": float(np.min(p)), "ssim_mean": float(np.mean(s)),
            "exact_share": float(np.mean(np.array(p) >= 40))}


def row_images(dw: torch.Tensor, db: torch.Tensor) -> np.ndarray:
    """dW[i] / db[i] for every row with a non-zero bias gradient, clipped to [0, 1]."""
    keep = db.abs() > 1e-12
    return (dw[keep] / db[keep, None]).clamp(0, 1).reshape(-1, *SHAPE).numpy()


def best_match(originals: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For every original, the candidate closest to it (least squared error)."""
    flat_o, flat_c = originals.reshape(len(originals), -1), candidates.reshape(len(candidates), -1)
    err = (flat_o**2).sum(1)[:, None] - 2 * flat_o @ flat_c.T + (flat_c**2).sum(1)[None, :]
    return candidates[err.argmin(1)]


def model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return mlp(ModelConfig(name="mlp", hidden=[64]), DataInfo("classification", SHAPE[0] * SHAPE[1], 10))


def gradient_rows(net, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    first = net[0]
    return row_images(first.weight.grad.clone(), first.bias.grad.clone())


def one_batch(x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> tuple[dict, np.ndarray]:
    """Every image attacked through the gradient of the batch it is in."""
    net, rebuilt = model(seed), []
    for i in range(0, len(x), batch):
        xb, yb = torch.from_numpy(x[i : i + batch].reshape(-1, 784)), torch.from_numpy(y[i : i + batch])
        rebuilt.append(best_match(x[i : i + batch], gradient_rows(net, xb, yb)))
    rebuilt = np.concatenate(rebuilt)
    return scores(x, rebuilt), rebuilt


def one_round(x: np.ndarray, y: np.ndarray, epochs: int, batch: int, seed: int) -> tuple[dict, np.ndarray]:
    """A client's whole local round (SGD lr 0.01, momentum 0.9), attacked through its update."""
    net = model(seed)
    before = [p.detach().clone() for p in net[0].parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(torch.from_numpy(x[idx].reshape(-1, 784))),
                                              torch.from_numpy(y[idx])).backward()
            opt.step()
    dw, db = (p.detach() - b for p, b in zip(net[0].parameters(), before))
    rebuilt = best_match(x, row_images(dw, db))
    return scores(x, rebuilt), rebuilt


def draw(path: Path, x: np.ndarray, rows: dict[str, np.ndarray], scored: dict[str, dict], count: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {"original": x, **rows}
    fig, axes = plt.subplots(len(named), count, figsize=(1.3 * count + 2.6, 1.3 * len(named)))
    for r, (name, images) in enumerate(named.items()):
        for c in range(count):
            axes[r, c].imshow(images[c], cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        median = scored[name]["psnr_median"] if name != "original" else 0
        label = name if name == "original" else f"{name}\nmedian PSNR " + ("exact" if median == EXACT else f"{median:.1f} dB")
        axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="images scored (balls and gradients)")
    parser.add_argument("--client", type=int, default=1333, help="images of the attacked local round (IID, 3 clients)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "grbfl_inversion.json")
    parser.add_argument("--figure", type=Path, default=HERE.parent / "docs" / "grbfl_inversion.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mnist5k(DataConfig())
    order = np.random.default_rng(args.seed).permutation(len(data.y))
    pick = order[: args.images]
    x, y = data.x[pick].reshape(-1, *SHAPE).astype(np.float32), data.y[pick]
    rows, scored = {}, {"all black": scores(x, np.zeros_like(x)),
                        "the set's mean image": scores(x, np.broadcast_to(x.mean(0), x.shape))}
    for name, cfg in BALLS.items():
        granules = segment(x * 255.0, cfg)
        rows[name] = np.stack([render_nodes(granules.image(k)[1], SHAPE) for k in range(len(x))])
        scored[name] = {**scores(x, rows[name]), "balls_median": float(np.median(granules.num_nodes))}
    for batch in (1, 16, 96):
        name = f"mlp gradient, batch {batch}"
        scored[name], rows[name] = one_batch(x, y, batch, args.seed)
    client = order[args.images : args.images + args.client]
    xc, yc = data.x[client].reshape(-1, *SHAPE).astype(np.float32), data.y[client]
    name = f"mlp update, a local round (2 epochs SGD, batch 96, {len(client)} images)"
    scored[name], _ = one_round(xc, yc, 2, 96, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": len(x), "seed": args.seed, "scores": scored}, indent=1))
    for name, s in scored.items():
        print(f"{name:70s} PSNR median {s['psnr_median']:5.1f} mean {s['psnr_mean']:5.1f} dB (min {s['psnr_min']:5.1f}), SSIM {s['ssim_mean']:.3f}, "
              f">=40 dB: {s['exact_share']:.2f}", flush=True)
    draw(args.figure, x, rows, scored)


if __name__ == "__main__":
    main()
