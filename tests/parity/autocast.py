"""PyTorch's CPU autocast as the reference for the engine's emulated mixed precision, checked by
tests/autocast_parity.rs.

Usage: autocast.py OUT_DIR. Writes autocast.safetensors from fixed seeds: for bf16 and fp16, a linear layer
and two convolutions run under torch.autocast("cpu", dtype), backpropagating a seeded upstream gradient
(itself in the half type, as autograd hands it to a half output). Inputs are f32 leaves; outputs and
gradients are stored as f32 (their values are 16-bit values: autocast's casts round them). Activations
are stored NHWC and conv weights OHWI (the engine's layouts). One fp16 case scales the upstream gradient
so that some input gradients overflow to inf, as a loss scale that is too large does.

One exception: torch's CPU kernel for fp16 convolution backward rounds partial results to fp16 before
summing them (27-57% of its dx/dw elements are off by a step from the once-rounded exact value), unlike a
GPU's cuDNN, which accumulates in f32 and rounds once. For fp16 convolutions, dx and dw are therefore
torch's f64 convolution gradients of the fp16-rounded operands, rounded once to fp16. (In bf16, torch's
CPU kernels already round once: its values are used as they are.)
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def nhwc(t):
    return t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t.contiguous()


def ohwi(t):
    return t.permute(0, 2, 3, 1).contiguous()


def once_rounded_conv_grads(out, name, inputs, stride):
    """Replaces dx and dw of an fp16 conv case by f64 gradients of the rounded operands, rounded once."""
    x, w = (inputs[k].half().double() for k in ("x", "w"))
    dy = out[f"{name}.dy"].permute(0, 3, 1, 2).double()
    dx = torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=1)
    dw = torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=1)
    out[f"{name}.dx"] = nhwc(dx.half().float())
    out[f"{name}.dw"] = ohwi(dw.half().float())


def main(out_dir):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2024)

    def randn(*shape, scale=1.0):
        return torch.randn(shape, generator=g, dtype=torch.float32) * scale

    out = {}

    def run(name, dtype, fn, inputs, layout, dy_scale=1.0):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        with torch.autocast("cpu", dtype=dtype):
            y = fn(**leaves)
        assert y.dtype == dtype, f"{name}: autocast gave {y.dtype}"
        dy = (randn(*y.shape) * dy_scale).to(dtype)
        y.backward(dy)
        for k, v in inputs.items():
            f = layout.get(k, nhwc)
            out[f"{name}.{k}"] = f(v)
            out[f"{name}.d{k}"] = f(leaves[k].grad.float())
        out[f"{name}.y"] = nhwc(y.detach().float())
        out[f"{name}.dy"] = nhwc(dy.float())

    for tag, dtype in HALF.items():
        lin = {"x": randn(64, 96), "w": randn(48, 96, scale=0.2), "b": randn(48)}
        run(f"{tag}.linear", dtype, lambda x, w, b: F.linear(x, w, b), lin, {})
        for case, stride in [("conv3x3s1", 1), ("conv3x3s2", 2)]:
            conv = {"x": randn(2, 8, 10, 9), "w": randn(12, 8, 3, 3, scale=0.2)}
            name = f"{tag}.{case}"
            run(name, dtype, lambda x, w: F.conv2d(x, w, stride=stride, padding=1), conv, {"w": ohwi})
            if dtype == torch.float16:
                once_rounded_conv_grads(out, name, conv, stride)
    big = {"x": randn(32, 64), "w": randn(40, 64)}
    run("fp16.linear_overflow", torch.float16, lambda x, w: F.linear(x, w), big, {}, dy_scale=8192.0)
    assert torch.isinf(out["fp16.linear_overflow.dx"]).any(), "the overflow case did not overflow"

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "autocast.safetensors")
    tmp = path + ".tmp"
    save_file(out, tmp, metadata={"torch": torch.__version__})
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: autocast.py OUT_DIR")
    main(sys.argv[1])
