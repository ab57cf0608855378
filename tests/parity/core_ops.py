"""PyTorch references for the core ops (conv, batch norm, PReLU, linear), checked by tests/parity_ops.rs.

Usage: core_ops.py OUT_DIR [--device cuda]. Writes core_ops_f64.safetensors and core_ops_f32.safetensors from fixed seeds:
inputs, a random upstream gradient `dy`, torch's outputs and its gradients w.r.t. every input. Activations
are stored NHWC and conv weights OHWI (the engine's layouts), converted here from torch's NCHW/OIHW.
With --device cuda torch computes on the GPU (TF32 off) from the same inputs: bench/gpu-check.sh checks the
engine's CUDA ops against those (`engine-train gpu-check --torch-fixtures`).
"""
import argparse
import os

import torch
import torch.nn.functional as F

from _safetensors import load_save_file

save_file = load_save_file()


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t.contiguous()


def run(fn, inputs, seed):
    """Runs fn on leaf copies of `inputs`, backpropagates a seeded random dy; returns y, dy, grads."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    y = fn(**leaves)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype).to(y.device)
    y.backward(dy)
    return y.detach(), dy, {k: v.grad for k, v in leaves.items()}


def cases(dtype, device):
    g = torch.Generator().manual_seed(1234)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).to(device)

    out = {}

    def put(name, inputs, y, dy, grads, layout=None):
        layout = layout or {}
        for k, v in inputs.items():
            out[f"{name}.{k}"] = layout.get(k, nhwc)(v)
            out[f"{name}.d{k}"] = layout.get(k, nhwc)(grads[k])
        out[f"{name}.y"] = nhwc(y)
        out[f"{name}.dy"] = nhwc(dy)

    ohwi = {"w": lambda t: t.permute(0, 2, 3, 1).contiguous()}
    for name, k, stride, pad in [("conv3x3s1", 3, 1, 1), ("conv3x3s2", 3, 2, 1), ("conv1x1s2", 1, 2, 0)]:
        inputs = {"x": randn(2, 6, 9, 8), "w": randn(7, 6, k, k, scale=0.3)}
        y, dy, gr = run(lambda x, w: F.conv2d(x, w, stride=stride, padding=pad), inputs, 1)
        put(name, inputs, y, dy, gr, ohwi)

    for name, shape in [("bn2d_train", (4, 5, 6, 3)), ("bn1d_train", (16, 6))]:
        c = shape[1]
        inputs = {"x": randn(*shape, scale=2.0, shift=0.7), "gamma": randn(c, scale=0.3, shift=1.0),
                  "beta": randn(c, scale=0.3)}
        rm0, rv0 = randn(c, scale=0.1), randn(c, scale=0.1, shift=1.0).abs()
        rm, rv = rm0.clone(), rv0.clone()
        y, dy, gr = run(lambda x, gamma, beta: F.batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5), inputs, 2)
        put(name, inputs, y, dy, gr)
        out.update({f"{name}.running_mean_in": rm0, f"{name}.running_var_in": rv0,
                    f"{name}.running_mean_out": rm, f"{name}.running_var_out": rv})

    inputs = {"x": randn(4, 5, 6, 3, scale=2.0, shift=-0.4)}
    rm0, rv0 = randn(5, scale=0.1), randn(5, scale=0.1, shift=1.0).abs()
    rm, rv = rm0.clone(), rv0.clone()
    y, dy, gr = run(lambda x: F.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5), inputs, 3)
    put("bn2d_train_noaffine", inputs, y, dy, gr)
    out.update({"bn2d_train_noaffine.running_mean_in": rm0, "bn2d_train_noaffine.running_var_in": rv0,
                "bn2d_train_noaffine.running_mean_out": rm, "bn2d_train_noaffine.running_var_out": rv})

    inputs = {"x": randn(4, 5, 6, 3, scale=2.0), "gamma": randn(5, scale=0.3, shift=1.0), "beta": randn(5, scale=0.3)}
    rm, rv = randn(5, scale=0.5), randn(5, scale=0.2, shift=1.5).abs()
    y, dy, gr = run(lambda x, gamma, beta: F.batch_norm(x, rm, rv, gamma, beta, False, 0.1, 1e-5), inputs, 4)
    put("bn2d_eval", inputs, y, dy, gr)
    out.update({"bn2d_eval.running_mean": rm, "bn2d_eval.running_var": rv})

    inputs = {"x": randn(2, 5, 4, 3), "alpha": randn(5, scale=0.2, shift=0.25)}
    y, dy, gr = run(lambda x, alpha: F.prelu(x, alpha), inputs, 5)
    put("prelu", inputs, y, dy, gr)

    inputs = {"x": randn(6, 10), "w": randn(7, 10, scale=0.3), "b": randn(7, scale=0.1)}
    y, dy, gr = run(lambda x, w, b: F.linear(x, w, b), inputs, 6)
    put("linear", inputs, y, dy, gr)

    # Optimizers: three steps of torch.optim on one parameter, the learning rate changing each step as a
    # schedule changes it; the parameter and the optimizer state after them.
    p0 = randn(1001)
    grads = [randn(1001, scale=0.1) for _ in range(3)]
    for name, lrs, make, fields in [
        ("sgd", [0.1, 0.05, 0.025], lambda q: torch.optim.SGD([q], lr=0.1, momentum=0.9, weight_decay=5e-4),
         ["momentum_buffer"]),
        ("adamw", [1e-3, 2e-3, 5e-4],
         lambda q: torch.optim.AdamW([q], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
         ["exp_avg", "exp_avg_sq"]),
    ]:
        q = torch.nn.Parameter(p0.clone())
        opt = make(q)
        for k, (g_k, lr) in enumerate(zip(grads, lrs)):
            opt.param_groups[0]["lr"] = lr
            q.grad = g_k.clone()
            opt.step()
            out[f"{name}.g{k}"] = g_k.clone()
            out[f"{name}.lr{k}"] = torch.tensor(lr, dtype=torch.float64)
        out[f"{name}.p0"] = p0.clone()
        out[f"{name}.p"] = q.detach()
        for f in fields:
            out[f"{name}.{f}"] = opt.state[q][f]
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--device", default="cpu", help="where torch computes (cpu or cuda)")
    a = ap.parse_args()
    out_dir = a.out_dir
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for dtype, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
        tensors = cases(dtype, torch.device(a.device))
        path = os.path.join(out_dir, f"core_ops_{tag}.safetensors")
        tmp = path + ".tmp"
        save_file(tensors, tmp)
        os.replace(tmp, path)
        print(f"wrote {path} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
