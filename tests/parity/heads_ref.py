"""PyTorch autograd reference of every margin-softmax head (spec: shared/spec/heads.md), written from the
spec and the official implementations' behaviour. Writes one safetensors fixture per (head config, input
case, dtype) into the output dir, plus heads_manifest.txt listing them.

Each fixture holds the inputs (embeddings [B, D], weight [C, D], labels [B] int64) and, for every step k
of a run that reuses the batch and updates the running state: loss.k, grad_embeddings.k, grad_weight.k
and state.<name>.k (f64 scalars). Metadata: head, dtype, steps, and param.<flag> for each hyper-parameter.

Usage: heads_ref.py OUT_DIR [--device cuda]. With --device cuda torch computes on the GPU from the same
inputs: bench/gpu-check.sh checks the engine's CUDA heads against those (`gpu-check --torch-fixtures`).
"""

import argparse
import math
import os

import torch
import torch.nn.functional as F

from _safetensors import load_save_file

save_file = load_save_file()

PI = math.pi
CE_MAX = -math.log(1e-30)  # insightface clamps p_y >= 1e-30 in the loss value only
ADA_EPS = 1e-3
ANGULAR_EPS = 1e-6  # [prop] for heads whose gradient divides by sin(theta)

DEFAULTS = {
    "softmax": {"s": 64.0},
    "sphereface": {"s": 64.0, "m1": 1.35},
    "cosface": {"s": 64.0, "m": 0.35},
    "arcface": {"s": 64.0, "m": 0.5, "easy-margin": False, "grad-mode": "exact"},
    "combined": {"s": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2},
    "curricularface": {"s": 64.0, "m": 0.5},
    "mv-am": {"s": 32.0, "m": 0.35, "t": 0.2, "easy-margin": True},
    "mv-arc": {"s": 32.0, "m": 0.5, "t": 0.2, "easy-margin": True},
    "magface": {"s": 64.0, "l-a": 10.0, "u-a": 110.0, "l-m": 0.45, "u-m": 0.8, "lambda-g": 35.0, "easy-margin": True},
    "adaface": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01},
    "qamface": {"s": 6.0, "m": 0.5},
    "sm-cosface": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "alpha": 1.0, "p0": 0.6, "variant": "base", "beta": 2.0},
    "nsm-cosface-star": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "alpha": -2.0, "p0": 0.6, "variant": "base", "beta": 2.0},
    "smaface": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "alpha": 1.0, "p0": 0.6, "variant": "base", "beta": 2.0},
    "smaface-star": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "alpha": 2.0, "p0": 0.6, "variant": "base", "beta": 2.0},
    "nsmaface-star": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "alpha": -2.0, "p0": 0.6, "variant": "base", "beta": 2.0},
    "hm-softmax": {"s": 64.0},
    "focal": {"s": 64.0, "gamma": 2.0},
    "hm-adaface": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01},
    "focal-adaface": {"s": 64.0, "m": 0.4, "h": 0.333, "t-alpha": 0.01, "gamma": 2.0},
    "qcface": {"s": 64.0, "m": 0.5, "l-a": 10.0, "u-a": 110.0, "k": 1.0, "b": 0.0, "lambda": 35.0, "phase": "planning"},
    "qcface-cur": {"s": 64.0, "m": 0.5, "l-a": 10.0, "u-a": 110.0, "k": 1.0, "b": 0.0, "lambda": 35.0, "phase": "planning"},
    "qcface-mvs": {"s": 32.0, "m": 0.5, "t": 0.2, "easy-margin": True, "l-a": 10.0, "u-a": 110.0, "k": 1.0, "b": 0.0,
                   "lambda": 35.0, "phase": "planning"},
}

# QCFace-X: the regularizer on top of the softmax loss X (the slides' Arc, Cur and MVS).
QCFACE_PARTS = {"qcface": "arcface", "qcface-cur": "curricularface", "qcface-mvs": "mv-arc"}
# Heads on AdaFace's norm-adaptive margin (its indicator, EMA and clip).
ADA_MARGIN = ("adaface", "sm-cosface", "nsm-cosface-star", "smaface", "smaface-star", "nsmaface-star", "hm-adaface",
              "focal-adaface")

INITIAL_STATE = {"curricularface": {"t": 0.0}, "qcface-cur": {"t": 0.0}}
INITIAL_STATE.update({name: {"mu": 20.0, "sigma": 100.0} for name in ADA_MARGIN})


def clamp_eps(name, p):
    if name in ("softmax", "cosface", "mv-am", "hm-softmax", "focal"):
        return 0.0
    if name == "arcface" and p["grad-mode"] == "ste":
        return 0.0
    if name == "qamface":
        return 1e-7
    if name in ADA_MARGIN:
        return ADA_EPS
    return ANGULAR_EPS


def arc_target(cy, m, easy):
    """cos(theta + m) with easy margin or the ArcFace fallback; m may be a per-sample tensor."""
    cm = torch.cos(torch.acos(cy) + m)
    if easy:
        return torch.where(cy > 0, cm, cy)
    if torch.is_tensor(m):
        th, mm = torch.cos(PI - m), torch.sin(m) * m
    else:
        th, mm = math.cos(PI - m), math.sin(m) * m
    return torch.where(cy > th, cm, cy - mm)


def cos_plus_raw(cy, m):
    return cy * math.cos(m) - torch.sqrt((1.0 - cy * cy).clamp_min(0.0)) * math.sin(m)


def norm_indicator(name, p, state, a, training):
    """AdaFace's detached z-score of the norm; updates mu/sigma (EMA of the batch, before use)."""
    n = a.detach().clip(0.001, 100.0)
    if training:
        ta = p["t-alpha"]
        state["mu"] = ta * n.mean().item() + (1 - ta) * state["mu"]
        state["sigma"] = ta * n.std().item() + (1 - ta) * state["sigma"]
    return ((n - state["mu"]) / (state["sigma"] + ADA_EPS) * p["h"]).clip(-1.0, 1.0)


def sma_weight(p, starred, prob):
    alpha, p0, variant = p["alpha"], p["p0"], p["variant"]
    u = p0 - prob
    if variant == "beta":
        return 7.0 / 8.0 * (1.0 + (torch.sigmoid(p["beta"] * u) - 0.5))
    if starred:
        c = abs(7.0 / (7.0 + alpha)) if p0 == 0.6 else 1.0 / (1.0 + alpha * (1.0 / (1.0 + math.exp(-p0)) - 0.5))
    else:
        c = 1.0
    if variant == "weak":
        u = u.clamp(min=0.0)
    elif variant == "strong":
        u = u.clamp(max=0.0)
    return c * (1.0 + alpha * (torch.sigmoid(u) - 0.5))


def mining_weight(name, p, x):
    """I(p) of the appendix-G baselines: HM-Softmax's 1[p < 0.5] (the text's reading), F-Softmax's (1-p)^gamma."""
    if name in ("hm-softmax", "hm-adaface"):
        return lambda prob: (prob < 0.5).to(x.dtype).detach()
    return lambda prob: (1.0 - prob) ** p["gamma"]


def head_loss(name, p, state, x, w, y, training):
    """Loss of one step (autograd graph to x and w); mutates `state`."""
    a = x.norm(dim=1)
    xh = x / a.clamp_min(1e-12)[:, None]
    wh = w / w.norm(dim=1).clamp_min(1e-12)[:, None]
    eps = clamp_eps(name, p)
    cos = (xh @ wh.t()).clamp(-1.0 + eps, 1.0 - eps)
    cy = cos.gather(1, y[:, None]).squeeze(1)
    s = p["s"]
    non_target = s * cos
    weight = None
    extra = torch.zeros((), dtype=x.dtype, device=x.device)
    part = QCFACE_PARTS.get(name, name)  # QCFace-X's softmax loss is X's

    if part in ("softmax", "hm-softmax", "focal"):
        zt = s * cy
        if part != "softmax":
            weight = mining_weight(part, p, x)
    elif part == "sphereface":
        zt = s * torch.cos(p["m1"] * torch.acos(cy))
    elif part == "cosface":
        zt = s * (cy - p["m"])
    elif part == "arcface":
        if p.get("grad-mode") == "ste":
            with torch.no_grad():
                t = torch.cos(torch.acos(cy) + p["m"])
                if p["easy-margin"]:
                    t = torch.where(cy > 0, t, cy)
            zt = s * (cy + (t - cy).detach())
        else:
            zt = s * arc_target(cy, p["m"], p.get("easy-margin", False))
    elif part == "combined":
        zt = s * (torch.cos(p["m1"] * torch.acos(cy) + p["m2"]) - p["m3"])
    elif part == "curricularface":
        if training:
            state["t"] = 0.01 * cy.detach().mean().item() + 0.99 * state["t"]
        t = state["t"]
        tau = cos_plus_raw(cy, p["m"]).detach()
        hard = cos > tau[:, None]
        non_target = torch.where(hard, s * cos * (t + cos), s * cos)
        zt = s * arc_target(cy, p["m"], False)
    elif part in ("mv-am", "mv-arc"):
        m, t = p["m"], p["t"]
        if part == "mv-am":
            fy = cy - m
            zt = s * (torch.where(cy > 0, cy - m, cy) if p["easy-margin"] else cy - m)
        else:
            fy = cos_plus_raw(cy, m)
            zt = s * arc_target(cy, m, p["easy-margin"])
        hard = cos > fy.detach()[:, None]
        non_target = torch.where(hard, s * ((1.0 + t) * cos + t), s * cos)
    elif part == "magface":
        la, ua, lm, um = p["l-a"], p["u-a"], p["l-m"], p["u-m"]
        ac = a.clamp(la, ua)
        mg = lm + (um - lm) / (ua - la) * (ac - la)
        zt = s * arc_target(cy, mg, p["easy-margin"])
        extra = p["lambda-g"] * (1.0 / ac + ac / (ua * ua))
    elif part in ADA_MARGIN:
        z = norm_indicator(name, p, state, a, training)
        g_ang, g_add = -p["m"] * z, p["m"] + p["m"] * z
        if name in ("sm-cosface", "nsm-cosface-star"):
            zt = s * (cy - g_add)
        else:
            phi = torch.clip(torch.acos(cy) + g_ang, ADA_EPS, PI - ADA_EPS)
            zt = s * (torch.cos(phi) - g_add)
        if name in ("hm-adaface", "focal-adaface"):
            weight = mining_weight(name, p, x)
        elif name != "adaface":
            starred = name in ("smaface-star", "nsmaface-star", "nsm-cosface-star")
            weight = lambda prob: sma_weight(p, starred, prob)
    elif part == "qamface":
        non_target = s * (2 * PI - torch.acos(cos)) ** 2
        zt = s * (2 * PI - torch.acos(cy) - p["m"]) ** 2
    else:
        raise ValueError(name)

    if name in QCFACE_PARTS and p["phase"] == "planning":
        # Guidance p_d: softmax of s*cos over every column, no margin and no modulated negatives, detached.
        pd = torch.softmax(s * cos, dim=1).gather(1, y[:, None]).squeeze(1).detach()
        la, ua, k = p["l-a"], p["u-a"], p["k"]
        ab = a.clamp_min(1e-3)
        r = k * pd * (1 / ab + ab / ua**2) + (1 - pd) * (1 / ab + ab / la**2) - p["b"]
        extra = p["lambda"] * r

    onehot = F.one_hot(y, cos.shape[1]).bool()
    z = torch.where(onehot, zt[:, None].expand_as(cos), non_target)
    lse = torch.logsumexp(z, dim=1)
    ce = lse - zt
    ce_value = ce + (ce.clamp(max=CE_MAX) - ce).detach()
    per_sample = ce_value if weight is None else weight(torch.exp(-ce)) * ce_value
    return per_sample.mean() + extra.mean()


def run_case(name, params, x0, w0, y, dtype, steps, device):
    p = dict(DEFAULTS[name])
    p.update(params)
    state = dict(INITIAL_STATE.get(name, {}))
    if name in QCFACE_PARTS:
        state["phase"] = 1.0 if p["phase"] == "planning" else 0.0
    out = {
        "embeddings": x0.to(dtype).contiguous(),
        "weight": w0.to(dtype).contiguous(),
        "labels": y.clone(),
    }
    yd = y.to(device)
    for k in range(steps):
        x = out["embeddings"].to(device).clone().requires_grad_(True)
        w = out["weight"].to(device).clone().requires_grad_(True)
        loss = head_loss(name, p, state, x, w, yd, training=True)
        loss.backward()
        out[f"loss.{k}"] = loss.detach().reshape(()).cpu()
        out[f"grad_embeddings.{k}"] = x.grad.detach().cpu()
        out[f"grad_weight.{k}"] = w.grad.detach().cpu()
        for sn, sv in state.items():
            out[f"state.{sn}.{k}"] = torch.tensor(sv, dtype=torch.float64)
        assert torch.isfinite(loss), (name, params, k)
    meta = {"head": name, "dtype": "f64" if dtype == torch.float64 else "f32", "steps": str(steps)}
    for key, v in params.items():
        meta[f"param.{key}"] = str(v).lower() if isinstance(v, bool) else str(v)
    return out, meta


def random_inputs(gen, b, c, d, lo, hi):
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    a = lo + (hi - lo) * torch.rand(b, generator=gen, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * a[:, None]
    w = torch.randn(c, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=gen, dtype=torch.int64)
    return x, w, y


def edge_inputs(gen, name, params, f32):
    """Rows with chosen target cosines (all of class 0, W_0 = e_0), a non-target at c = 1 and one at c = -1
    for row 0, tiny and huge norms."""
    p = dict(DEFAULTS[name])
    p.update(params)
    m = p.get("m", 0.5)
    m = m if isinstance(m, float) else 0.5
    near = 1e-3 if f32 else 1e-6
    cys = [1.0, -1.0, 0.0, 0.5, math.cos(PI - m) + near, math.cos(PI - m) - near, (1 - 1e-5) if f32 else (1 - 3e-7), -0.3]
    norms = [30.0, 1e-4, 1e4, 10.0, 50.0, 110.0, 5.0, 80.0]
    d, c = 6, 7
    w = torch.randn(c, d, generator=gen, dtype=torch.float64)
    w[0] = 0.0
    w[0, 0] = 1.0
    x = torch.zeros(len(cys), d, dtype=torch.float64)
    for i, (cy, a) in enumerate(zip(cys, norms)):
        x[i, 0] = cy
        x[i, 1] = math.sqrt(max(0.0, 1 - cy * cy))
        x[i] *= a
    w[1] = x[0]
    w[2] = -x[0]
    y = torch.zeros(len(cys), dtype=torch.int64)
    return x, w, y


CONFIGS = [
    ("softmax", {}),
    ("sphereface", {}),
    ("cosface", {}),
    ("arcface", {}),
    ("arcface", {"easy-margin": True}),
    ("arcface", {"grad-mode": "ste"}),
    ("combined", {}),
    ("combined", {"m1": 1.5, "m2": 0.2, "m3": 0.1}),
    ("curricularface", {}),
    ("mv-am", {}),
    ("mv-arc", {}),
    ("mv-arc", {"easy-margin": False}),
    ("magface", {}),
    ("magface", {"easy-margin": False}),
    ("adaface", {}),
    ("qamface", {}),
    ("sm-cosface", {}),
    ("smaface", {}),
    ("smaface-star", {}),
    ("nsmaface-star", {}),
    ("smaface-star", {"variant": "weak"}),
    ("smaface-star", {"variant": "strong"}),
    ("smaface", {"variant": "beta"}),
    ("hm-softmax", {}),
    ("focal", {}),
    ("qcface", {}),
    ("qcface", {"phase": "warmup"}),
    # Appended so that the fixtures above keep their file names and seeds.
    ("hm-adaface", {}),
    ("focal-adaface", {}),
    ("nsm-cosface-star", {}),
    ("nsm-cosface-star", {"variant": "weak"}),
    ("qcface-cur", {}),
    ("qcface-cur", {"phase": "warmup"}),
    ("qcface-mvs", {}),
    ("qcface-mvs", {"easy-margin": False}),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--device", default="cpu", help="where torch computes (cpu or cuda)")
    a = ap.parse_args()
    out_dir, device = a.out_dir, torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for idx, (name, params) in enumerate(CONFIGS):
        norm_range = (5.0, 120.0) if name in ("magface",) + ADA_MARGIN or name in QCFACE_PARTS else (0.5, 3.0)
        for dtype in (torch.float64, torch.float32):
            tag = "f64" if dtype == torch.float64 else "f32"
            gen = torch.Generator().manual_seed(1000 + idx)
            cases = {
                "rand": random_inputs(gen, 6, 10, 8, *norm_range),
                "pair": random_inputs(gen, 2, 5, 4, *norm_range),
                "edge": edge_inputs(gen, name, params, dtype == torch.float32),
            }
            for case, (x, w, y) in cases.items():
                if dtype == torch.float32:
                    # Round the inputs to f32 first so both sides see the same numbers.
                    x, w = x.float().double(), w.float().double()
                tensors, meta = run_case(name, params, x, w, y, dtype, steps=5, device=device)
                meta["case"] = case
                fname = f"heads_{idx:02d}_{name}_{case}_{tag}.safetensors"
                tmp = os.path.join(out_dir, fname + ".tmp")
                save_file(tensors, tmp, metadata=meta)
                os.replace(tmp, os.path.join(out_dir, fname))
                written.append(fname)
    tmp = os.path.join(out_dir, "heads_manifest.txt.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(written) + "\n")
    os.replace(tmp, os.path.join(out_dir, "heads_manifest.txt"))
    print(f"heads_ref: wrote {len(written)} fixtures to {out_dir}")


if __name__ == "__main__":
    main()
