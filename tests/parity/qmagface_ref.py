"""Reference for the QMagFace weight fit: QMagFace's `train` (similarity/qmagface.py in
pterhoer/QMagFace) re-derived with numpy, with scikit-learn's roc_curve (drop_intermediate=True) and
LinearRegression emulated. Two documented departures, shared with the Rust side: the ROC ranks the raw
score omega*q + c instead of its sigmoid (same ranking; the line is fitted against the raw threshold),
and FMRs below 1 / impostors, or whose best point is the reject-all one, are skipped.

Usage: qmagface_ref.py OUT_DIR. Writes OUT_DIR/qmagface_fit.txt in the `key value...` block format of
eval_ref.py.
"""
import os
import sys

import numpy as np


def roc_curve(y, score):
    """sklearn.metrics.roc_curve(y, score) with drop_intermediate=True and the (0, 0, inf) start."""
    order = np.argsort(score, kind="mergesort")[::-1]
    s, t = score[order], y[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, t.size - 1]
    tps = np.cumsum(t)[idx].astype(float)
    fps = 1 + idx - tps
    thr = s[idx]
    keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
    fps, tps, thr = fps[keep], tps[keep], thr[keep]
    tps, fps, thr = np.r_[0, tps], np.r_[0, fps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def fit(c, q, y, weights_num=20, fmr_num=50, fmr_min=1e-5, fmr_max=1e-2, max_ratio=0.5):
    fmrs = np.logspace(np.log10(fmr_min), np.log10(fmr_max), num=fmr_num)
    fmrs = fmrs[fmrs * np.sum(~y) >= 1.0]
    max_omega = max_ratio / np.max(q)
    omegas = np.linspace(-max_omega, max_omega, num=weights_num)
    thrs = np.zeros((weights_num, len(fmrs)))
    fnmrs = np.zeros((weights_num, len(fmrs)))
    for i, omega in enumerate(omegas):
        fpr, tpr, thr = roc_curve(y, omega * q + c)
        for j, fmr in enumerate(fmrs):
            k = np.argmin(1 - tpr[fpr < fmr])
            thrs[i, j], fnmrs[i, j] = thr[k], (1 - tpr[fpr < fmr])[k]
            if not np.isfinite(thrs[i, j]):
                fnmrs[i, j] = 1.0
    points = []
    for j, fmr in enumerate(fmrs):
        i = np.argmin(fnmrs[:, j])
        if np.isfinite(thrs[i, j]):
            points.append((fmr, omegas[i], thrs[i, j], fnmrs[i, j]))
    ts = np.array([p[2] for p in points])
    ws = np.array([p[1] for p in points])
    # LinearRegression: least squares on centred data.
    tm, wm = ts.mean(), ws.mean()
    slope = np.sum((ts - tm) * (ws - wm)) / np.sum((ts - tm) ** 2)
    intercept = wm - slope * tm
    return -intercept, slope, points


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: qmagface_ref.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(7)
    n = 20000
    y = np.arange(n) % 2 == 0
    low = rng.random(n) < 0.25
    q = np.where(low, 10 + 5 * rng.random(n), 30 + 10 * rng.random(n))
    genuine = np.where(low, 0.28 + 0.1 * rng.standard_normal(n), 0.7 + 0.05 * rng.standard_normal(n))
    c = np.where(y, genuine, 0.1 * rng.standard_normal(n))
    # A block of tied cosines exercises the ROC's grouping of equal scores.
    c[:400] = np.round(c[:400], 2)
    alpha, beta, points = fit(c, q, y)
    fmt = lambda v: " ".join(repr(float(x)) for x in v)
    out = ["# facetrain qmagface parity v1", "case fit20000",
           "cos " + fmt(c), "qmin " + fmt(q), "issame " + " ".join("1" if s else "0" for s in y),
           "alpha " + fmt([alpha]), "beta " + fmt([beta]),
           "fmr " + fmt([p[0] for p in points]), "omega " + fmt([p[1] for p in points]),
           "threshold " + fmt([p[2] for p in points]), "fnmr " + fmt([p[3] for p in points]), "end"]
    path = os.path.join(out_dir, "qmagface_fit.txt")
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(path + ".tmp", path)
    print(f"qmagface_ref: alpha {alpha:.6f} beta {beta:.6f} from {len(points)} FMRs")


if __name__ == "__main__":
    main()
