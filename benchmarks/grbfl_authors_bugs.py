"""The two bugs of the authors' released segmentation (AIGNLAI/GrBFL img2graph.py), measured on
fedray's GrBFL-default balls of 200 MNIST-5k images: edges per image by their edge test as
released, by the same test with radii, and by fedray's touching rule; and how many image windows
that break the variance limit (20) pass it when the squares are summed in uint8 (img**2 wraps).

    python benchmarks/grbfl_authors_bugs.py
"""
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from fedray.data.images import mnist5k
from fedray.config.granular import GranularConfig
from fedray.data.granular.segment import segment
ds = mnist5k(None)
rows = np.random.default_rng(0).permutation(5000)[:200]
imgs = ds.x[rows].reshape(-1, 28, 28) * 255.0
g = segment(imgs, GranularConfig())
touch, wrong, right = [], [], []
for k in range(len(imgs)):
    boxes, feats, edges = g.image(k)
    r0, c0, r1, c1 = [boxes[:, i].astype(float) for i in range(4)]
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    ry, rx = (r1 - r0) / 2, (c1 - c0) / 2
    img = np.rint(imgs[k])
    mean = np.array([img[int(a):int(c)+1, int(b):int(d)+1].mean() for a, b, c, d in boxes])
    var = np.array([img[int(a):int(c)+1, int(b):int(d)+1].var() for a, b, c, d in boxes])
    dr, dc = np.abs(cr[:, None] - cr[None]) - 1, np.abs(cc[:, None] - cc[None]) - 1
    iu = np.triu(np.ones((len(boxes),) * 2, bool), 1)
    # the authors' test: row gap against the two variances, column gap against the two means
    wrong.append(int(((dr < var[:, None] + var[None]) & (dc < mean[:, None] + mean[None]) & iu).sum()))
    right.append(int(((dr < ry[:, None] + ry[None] + 1) & (dc < rx[:, None] + rx[None] + 1) & iu).sum()))
    touch.append(len(edges))
print(f"balls/image {np.mean(g.num_nodes):.1f}; edges/image: touching {np.mean(touch):.0f}, "
      f"authors' rule as released {np.mean(wrong):.0f} (of {np.mean(g.num_nodes*(g.num_nodes-1)/2):.0f} pairs), "
      f"with radii {np.mean(right):.0f}")
# uint8 wrap: variance of every 3x3..7x7 window, true vs img**2 computed in uint8
true_hi = wrap_lo = 0; n = 0
for img in np.rint(imgs).astype(np.uint8):
    sq = (img ** 2).astype(np.float64)  # what the authors' sum_of_square accumulates (uint8 ** 2 wraps)
    f = img.astype(np.float64)
    for s in (3, 5, 7):
        for i in range(0, 28 - s + 1, 2):
            for j in range(0, 28 - s + 1, 2):
                w, q = f[i:i+s, j:j+s], sq[i:i+s, j:j+s]
                t = w.var(); v = q.mean() - w.mean() ** 2
                n += 1
                if t >= 20:
                    true_hi += 1
                    wrap_lo += v < 20
print(f"windows with true variance >= 20: {true_hi} of {n}; of those, passing the wrapped test (< 20): {wrap_lo} ({wrap_lo/true_hi:.1%})")
