"""Reference numbers for the verification protocol, computed the way insightface's
recognition/arcface_torch/eval/verification.py computes them (calculate_roc, calculate_val), re-derived
with numpy only: scikit-learn's unshuffled KFold and scipy's interp1d(kind='slinear') are emulated.

Usage: eval_ref.py OUT_DIR. Writes OUT_DIR/eval_verification.txt: blocks of `key value...` lines, one
block per case between `case NAME` and `end`. Floats are written with repr(), so they parse back exactly.
"""
import os
import sys

import numpy as np


def kfold(n, k=10):
    """sklearn KFold(n_splits=k, shuffle=False): contiguous test folds, the first n % k one larger."""
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    idx = np.arange(n)
    start = 0
    for s in sizes:
        test = idx[start:start + s]
        train = np.concatenate([idx[:start], idx[start + s:]])
        yield train, test
        start += s


def normalize(x):
    """sklearn.preprocessing.normalize (l2, rows)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    return x / norms[:, np.newaxis]


def accuracy_at(threshold, dist, issame):
    pred = np.less(dist, threshold)
    tp = np.sum(np.logical_and(pred, issame))
    fp = np.sum(np.logical_and(pred, np.logical_not(issame)))
    tn = np.sum(np.logical_and(np.logical_not(pred), np.logical_not(issame)))
    fn = np.sum(np.logical_and(np.logical_not(pred), issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def roc_folds(thresholds, dist, issame, nfolds=10):
    tprs = np.zeros((nfolds, len(thresholds)))
    fprs = np.zeros((nfolds, len(thresholds)))
    acc = np.zeros(nfolds)
    best_ts = np.zeros(nfolds)
    for f, (train, test) in enumerate(kfold(len(dist), nfolds)):
        acc_train = np.array([accuracy_at(t, dist[train], issame[train])[2] for t in thresholds])
        best = np.argmax(acc_train)
        for j, t in enumerate(thresholds):
            tprs[f, j], fprs[f, j], _ = accuracy_at(t, dist[test], issame[test])
        _, _, acc[f] = accuracy_at(thresholds[best], dist[test], issame[test])
        best_ts[f] = thresholds[best]
    return np.mean(tprs, 0), np.mean(fprs, 0), acc, best_ts


def val_far_at(threshold, dist, issame):
    pred = np.less(dist, threshold)
    ta = np.sum(np.logical_and(pred, issame))
    fa = np.sum(np.logical_and(pred, np.logical_not(issame)))
    return float(ta) / float(np.sum(issame)), float(fa) / float(np.sum(np.logical_not(issame)))


def slinear(x, y, x0):
    """scipy<=1.8 interp1d(x, y, kind='slinear')(x0): degree-1 B-spline with knots [x0, x..., x_last],
    evaluated with scipy's interval search and de Boor step (x sorted, duplicates allowed)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    x, y = x[order], y[order]
    n = len(x)
    t = np.r_[x[0], x, x[-1]]
    assert t[1] <= x0 <= t[n], "interp1d raises outside the data range"
    l = 2
    while l != n and x0 >= t[l]:
        l += 1
    ell = l - 1
    xa, xb = t[ell], t[ell + 1]
    if xb == xa:
        h0 = h1 = 0.0
    else:
        w = 1.0 / (xb - xa)
        h0 = w * (xb - x0)
        h1 = w * (x0 - xa)
    return 0.0 + y[ell - 1] * h0 + y[ell] * h1


def val_folds(thresholds, dist, issame, far_target, nfolds=10):
    val = np.zeros(nfolds)
    far = np.zeros(nfolds)
    ts = np.zeros(nfolds)
    for f, (train, test) in enumerate(kfold(len(dist), nfolds)):
        far_train = np.array([val_far_at(t, dist[train], issame[train])[1] for t in thresholds])
        if np.max(far_train) >= far_target:
            threshold = slinear(far_train, thresholds, far_target)
        else:
            threshold = 0.0
        val[f], far[f] = val_far_at(threshold, dist[test], issame[test])
        ts[f] = threshold
    return np.mean(val), np.std(val), np.mean(far), ts


def exact_auc(score, issame):
    """Probability a genuine pair outscores an impostor pair, ties half (average ranks)."""
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    npos = int(np.sum(issame))
    nneg = len(score) - npos
    return (np.sum(ranks[issame]) - npos * (npos + 1) / 2.0) / (npos * nneg)


def tar_at_far(score, issame, fars):
    """Highest TAR over thresholds (accept score >= t, one per distinct score) with FAR <= far; only
    where there are at least 10 / far impostor pairs."""
    npos = int(np.sum(issame))
    nneg = len(score) - npos
    uniq = np.unique(score)[::-1]
    tp = np.array([np.sum(issame & (score >= u)) for u in uniq])
    fp = np.array([np.sum(~issame & (score >= u)) for u in uniq])
    out = []
    for far in fars:
        if nneg * far < 10.0:
            out.append(None)
            continue
        best_tp = 0
        for k in range(len(uniq)):
            if fp[k] / nneg > far:
                break
            best_tp = max(best_tp, tp[k])
        out.append(best_tp / npos)
    return out


def fmt(values):
    return " ".join(repr(float(v)) for v in values)


def evaluate_case(out, name, dist, issame, extra_lines):
    thresholds = np.arange(0, 4, 0.01)
    tpr, fpr, acc, best_ts = roc_folds(thresholds, dist, issame)
    val_thresholds = np.arange(0, 4, 0.001)
    val, val_std, far, val_ts = val_folds(val_thresholds, dist, issame, 1e-3)
    all_acc = np.array([accuracy_at(t, dist, issame)[2] for t in thresholds])
    best = int(np.argmax(all_acc))
    fars = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    tars = tar_at_far(-dist, issame, fars)
    out.append(f"case {name}")
    out.extend(extra_lines)
    out.append("issame " + " ".join("1" if s else "0" for s in issame))
    out.append("dist " + fmt(dist))
    out.append("fold_accuracies " + fmt(acc))
    out.append("fold_thresholds " + fmt(best_ts))
    out.append("accuracy_mean " + fmt([np.mean(acc)]))
    out.append("accuracy_std " + fmt([np.std(acc)]))
    out.append("best_threshold " + fmt([thresholds[best]]))
    out.append("best_accuracy " + fmt([all_acc[best]]))
    out.append("val_mean " + fmt([val]))
    out.append("val_std " + fmt([val_std]))
    out.append("far_mean " + fmt([far]))
    out.append("val_thresholds " + fmt(val_ts))
    out.append("grid_auc " + fmt([np.trapz(tpr, fpr)]))
    out.append("auc " + fmt([exact_auc(-dist, issame)]))
    out.append("tar_at_far " + " ".join("none" if t is None else repr(float(t)) for t in tars))
    out.append("end")
    print(f"eval_ref: {name}: {len(dist)} pairs, accuracy {np.mean(acc):.5f}+-{np.std(acc):.5f}, "
          f"VAL@1e-3 {val:.5f}, AUC {exact_auc(-dist, issame):.5f}")


def embedding_case(out, name, rng, n, dim, noise):
    """Float32 'network outputs' for images and their flips; genuine pairs share an identity vector."""
    issame = np.zeros(n, dtype=bool)
    issame[rng.permutation(n)[: n // 2]] = True
    ident = rng.standard_normal((n, dim))
    other = rng.standard_normal((n, dim))
    a = ident + noise * rng.standard_normal((n, dim))
    b = np.where(issame[:, None], ident, other) + noise * rng.standard_normal((n, dim))
    plain = np.empty((2 * n, dim))
    plain[0::2], plain[1::2] = a, b
    plain = plain.astype(np.float32)
    flipped = (plain + 0.3 * rng.standard_normal(plain.shape)).astype(np.float32)
    # As insightface's test(): float64 sum of the two passes, normalized, pairs (2i, 2i+1).
    emb = normalize(plain.astype(np.float64) + flipped.astype(np.float64))
    e1, e2 = emb[0::2], emb[1::2]
    dist = np.sum(np.square(np.subtract(e1, e2)), 1)
    lines = [f"dim {dim}", "plain " + fmt(plain.ravel()), "flipped " + fmt(flipped.ravel())]
    evaluate_case(out, name, dist, issame, lines)


def distance_case(out, name, rng, n, quantum=None):
    """Distances given directly (squared L2 lies in [0, 4]); optionally quantized to force ties."""
    issame = rng.random(n) < 0.5
    dist = np.where(issame, rng.normal(1.0, 0.35, n), rng.normal(1.9, 0.3, n))
    dist = np.clip(dist, 0.0, 4.0)
    if quantum is not None:
        dist = np.round(dist / quantum) * quantum
    evaluate_case(out, name, dist, issame, [])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: eval_ref.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240611)
    out = ["# facetrain eval parity v1"]
    embedding_case(out, "emb600", rng, 600, 8, 1.0)
    embedding_case(out, "emb1003", rng, 1003, 4, 0.8)
    distance_case(out, "dist30000", rng, 30000)
    distance_case(out, "ties2001", rng, 2001, quantum=0.005)
    path = os.path.join(out_dir, "eval_verification.txt")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
