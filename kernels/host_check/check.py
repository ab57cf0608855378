#!/usr/bin/env python3
"""Compares the host-emulated margin kernels (harness.cpp) with f64 NumPy formulas; run via run.sh."""
import math, subprocess, sys

import numpy as np
rng = np.random.default_rng(3)
B, C = 16, 50
cos = rng.uniform(-0.6, 0.6, (B, C)).astype(np.float32)
lab = rng.integers(0, C, B)
special = [0.95, 0.5, -0.5, math.cos(math.pi - 0.5) + 1e-3, math.cos(math.pi - 0.5) - 1e-3, 0.0, -0.9, 0.99]
for i in range(B):
    cos[i, lab[i]] = special[i % len(special)] if i < len(special) else rng.uniform(-0.2, 0.9)
# a few hard negatives above the target's margin threshold
cos[1, (lab[1] + 1) % C] = 0.4
cos[2, (lab[2] + 1) % C] = 0.55
c = cos.astype(np.float64)
PI = math.pi

def default(**kw):
    hp = dict(s=64, m1=1, m2=0, m3=0, eps=0, t=0, inv_batch=1 / B, w_alpha=0, w_p0=0, w_c=1, w_beta=1, w_gamma=0,
              target_kind=0, flags=0, nontarget_kind=0, weight_kind=0, sma_variant=0)
    hp.update(kw)
    return hp

def run(hp):
    order = ["s", "m1", "m2", "m3", "eps", "t", "inv_batch", "w_alpha", "w_p0", "w_c", "w_beta", "w_gamma",
             "target_kind", "flags", "nontarget_kind", "weight_kind", "sma_variant"]
    inp = f"{B} {C}\n" + " ".join(str(hp[k]) for k in order) + "\n"
    inp += " ".join(f"{v:.9g}" for v in cos.ravel()) + "\n" + " ".join(str(int(l)) for l in lab) + "\n"
    out = np.array(subprocess.run([sys.argv[1]], input=inp, capture_output=True, text=True, check=True).stdout.split(), dtype=np.float64)
    return out[:B], out[B:B + B * C].reshape(B, C)

def clampg(x, lo, hi):
    return np.clip(x, lo, hi), ((x > lo) & (x < hi)).astype(float)

def reference(hp, kind):
    s, m1, m2, m3, eps, t = hp["s"], hp["m1"], hp["m2"], hp["m3"], hp["eps"], hp["t"]
    cc, inside = clampg(c, -1 + eps, 1 - eps)
    th = np.arccos(cc); sth = np.sqrt(np.maximum(0, 1 - cc * cc))
    z = s * cc; zp = s * np.ones_like(cc)
    cy = cc[np.arange(B), lab]; thy = th[np.arange(B), lab]; sy = sth[np.arange(B), lab]
    tau = np.cos(m1 * thy + m2) - m3
    if kind == "curricular":
        hard = cc > tau[:, None]
        z = np.where(hard, s * cc * (t + cc), z); zp = np.where(hard, s * (t + 2 * cc), zp)
    if kind == "mv":
        hard = cc > tau[:, None]
        z = np.where(hard, s * ((1 + t) * cc + t), z); zp = np.where(hard, s * (1 + t), zp)
    if kind == "qam":
        a = 2 * PI - th
        z = s * a * a; zp = 2 * s * a / sth
    zp = zp * inside
    zy = np.zeros(B); zpy = np.zeros(B)
    for i in range(B):
        ci, ti, si = cy[i], thy[i], sy[i]
        arg = m1 * ti + m2
        if kind == "qam":
            a = 2 * PI - ti - m2; zy[i] = s * a * a; zpy[i] = 2 * s * a / si
        elif (hp["flags"] & 2) and ci <= 0:
            zy[i] = s * ci; zpy[i] = s
        elif hp["flags"] & 8:
            zy[i] = s * (math.cos(arg) - m3); zpy[i] = s
        elif (hp["flags"] & 1) and arg >= PI:
            zy[i] = s * (ci - m2 * math.sin(m2) - m3); zpy[i] = s
        elif hp["flags"] & 4:
            a = min(max(arg, eps), PI - eps)
            zy[i] = s * (math.cos(a) - m3)
            zpy[i] = s * m1 * math.sin(arg) / si if (eps < arg < PI - eps) else 0
        else:
            zy[i] = s * (math.cos(arg) - m3); zpy[i] = s * m1 * math.sin(arg) / si
        zpy[i] *= inside[i, lab[i]]
        z[i, lab[i]] = zy[i]; zp[i, lab[i]] = zpy[i]
    mx = z.max(1)
    lse = mx + np.log(np.exp(z - mx[:, None]).sum(1))
    logp = zy - lse; p = np.exp(logp); ce = -logp
    I = np.ones(B); st = np.ones(B)
    if hp["weight_kind"] == 1:
        u = hp["w_p0"] - p
        sg = 1 / (1 + np.exp(-hp["w_beta"] * u))
        I = hp["w_c"] * (1 + hp["w_alpha"] * (sg - 0.5))
        Ip = -hp["w_c"] * hp["w_alpha"] * hp["w_beta"] * sg * (1 - sg)
        st = I + Ip * p * logp
    if hp["weight_kind"] == 3:
        g = hp["w_gamma"]
        I = (1 - p) ** g; st = I - g * (1 - p) ** (g - 1) * p * logp
    P = np.exp(z - lse[:, None]); d = np.zeros_like(P); d[np.arange(B), lab] = 1
    G = (1 / B) * st[:, None] * (P - d) * zp
    return I * ce, G

cases = [
    ("arcface", default(m2=0.5, flags=1), "plain"),
    ("arcface STE", default(m2=0.5, flags=8), "plain"),
    ("cosface", default(m3=0.35), "plain"),
    ("sphereface", default(m1=1.35), "plain"),
    ("combined", default(m1=1.0, m2=0.3, m3=0.2), "plain"),
    ("curricular", default(m2=0.5, flags=1, t=0.3, nontarget_kind=1), "curricular"),
    ("mv-arc", default(s=32, m2=0.5, flags=2, t=0.2, nontarget_kind=2), "mv"),
    ("mv-am", default(s=32, m3=0.35, flags=2, t=0.2, nontarget_kind=2), "mv"),
    ("qam", default(s=6, m2=0.5, eps=1e-7, target_kind=1, nontarget_kind=4), "qam"),
    ("adaface-like clip", default(m2=-0.2, m3=0.6, eps=1e-3, flags=4), "plain"),
    ("smaface base weights", default(m2=0.5, flags=1, weight_kind=1, w_alpha=1, w_p0=0.6), "plain"),
    ("focal", default(weight_kind=3, w_gamma=2), "plain"),
]
failed = 0
for name, hp, kind in cases:
    loss, G = run(hp)
    lr, Gr = reference(hp, kind)
    el = np.linalg.norm(loss - lr) / np.linalg.norm(lr)
    eg = np.linalg.norm(G - Gr) / np.linalg.norm(Gr)
    ok = el < 1e-4 and eg < 1e-4
    failed += not ok
    print(f"{name:24s} loss {el:.2e}  G {eg:.2e}  {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)
