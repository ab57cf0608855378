#!/usr/bin/env python3
"""The PyTorch peer's step ledger: every kernel PyTorch eager launches for one IR-50 + ArcFace training
step (forward, backward, SGD) under CUDA autocast bf16 with channels-last activations, with its FLOPs and
bytes counted by the ledger's rules, written as JSON for `engine-train bench --ledger`.

No GPU and no batch-512 memory: the model runs on meta tensors. The op sequence is PyTorch's own: a
TorchDispatchMode logs every aten op the forward, the autograd engine's backward and torch.optim.SGD
(foreach) dispatch, with shapes and dtypes. Autocast does not run on meta tensors, so CUDA autocast's cast
rules are applied by a TorchFunctionMode above autograd, from PyTorch's documented CUDA op lists (ops that
autocast to bf16, ops that autocast to f32, the rest in their inputs' type), with autocast's cache of
casted leaf weights: each cast is a `_to_copy` the backward sees, as under real autocast.

The step is insightface's arcface_torch (what users run): iresnet50 with `fc` and `features` outside
autocast; the head as partial_fc (sample rate 1): normalize embeddings and weight (under autocast: f32),
linear (bf16), `.float()`, clamp, CombinedMarginLoss's ArcFace (the in-place arccos/cos trick), times s,
and DistCrossEntropy on one GPU; SGD momentum 0.9, weight decay 5e-4, foreach.

Kernels per aten op (stated, not measured; each kernel's bytes are what it reads plus what it writes):
  convolution: one cuDNN call; convolution_backward: one per requested gradient (data, filter);
  mm/addmm/bmm: one cuBLAS call; native_batch_norm (training, channels-last): two kernels, statistics
  (reads x) and transform (reads x, writes y), running statistics updated inside;
  native_batch_norm_backward: two kernels, reduce (reads dy, x) and elementwise (reads dy, x, writes dx);
  _foreach_*: multi_tensor_apply's launches (chunks of 65,536 elements, at most 320 blocks and 110/64/48
  tensors per launch for 2/3/4 lists); views, detach and metadata ops: none; every other op: one kernel.

Usage: torch_peer.py [--backbone r50] [--batch 512] [--classes 93431] [--out bench/ledger]
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "parity"))
from _iresnet_torch import iresnet  # noqa: E402

HALF = torch.bfloat16

# PyTorch's documented CUDA autocast lists (torch.amp docs, "CUDA Ops that can autocast to float16" and
# "... to float32"), the entries this step can reach.
TO_HALF = {F.conv2d, F.linear, F.prelu, torch.matmul, torch.mm, torch.addmm, torch.bmm, torch.Tensor.__matmul__}
TO_FLOAT = {F.normalize, F.softmax, F.log_softmax, F.cross_entropy, F.nll_loss, torch.exp, torch.log,
            torch.acos, torch.Tensor.exp, torch.Tensor.log, torch.Tensor.acos, torch.sum, torch.Tensor.sum,
            torch.norm, torch.Tensor.norm, torch.pow, torch.Tensor.pow, torch.rsqrt, torch.reciprocal}


class CudaAutocast(TorchFunctionMode):
    """CUDA autocast's cast rules on any device, above autograd (so backward sees the casts)."""

    def __init__(self):
        super().__init__()
        self.cache = {}

    def cast(self, t, dtype):
        if not (isinstance(t, torch.Tensor) and t.is_floating_point()) or t.dtype == dtype:
            return t
        # Autocast caches the casts of leaf tensors that require grad (the weights) within its region.
        if t.is_leaf and t.requires_grad:
            key = (id(t), dtype)
            if key not in self.cache:
                self.cache[key] = t.to(dtype)
            return self.cache[key]
        return t.to(dtype)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in TO_HALF:
            args = tuple(self.cast(a, HALF) for a in args)
            kwargs = {k: self.cast(v, HALF) for k, v in kwargs.items()}
        elif func in TO_FLOAT:
            args = tuple(self.cast(a, torch.float32) for a in args)
        return func(*args, **kwargs)


NO_KERNEL = ("view", "_unsafe_view", "t", "transpose", "permute", "expand", "as_strided", "detach", "alias",
             "slice", "select", "unsqueeze", "squeeze", "reshape", "_reshape_alias", "empty", "empty_like",
             "empty_strided", "lift_fresh", "_record_function", "split", "unbind", "flatten", "set_")


def nbytes(t):
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)):
        return [t for a in x for t in tensors(a)]
    return []


def family(name):
    for key, fam in (("convolution", "conv"), ("batch_norm", "batch norm"), ("prelu", "prelu"),
                     ("_foreach", "optimizer"), ("mm", "gemm"), ("_to_copy", "cast"), ("copy_", "copy"),
                     ("sum", "reduction"), ("max", "reduction"), ("mean", "reduction"), ("norm", "normalize")):
        if key in name:
            return fam
    return "elementwise"


def multi_tensor_launches(lists):
    """multi_tensor_apply's kernel launches over tensor lists of equal lengths."""
    depth = len(lists)
    max_tensors = {1: 110, 2: 110, 3: 64, 4: 48, 5: 36}[min(depth, 5)]
    launches, blocks, in_launch = 0, 0, 0
    for t in lists[0]:
        in_launch += 1
        for _ in range(math.ceil(t.numel() / 65536)):
            blocks += 1
            if blocks == 320:
                launches += 1
                blocks = 0
        if in_launch == max_tensors:
            if blocks:
                launches += 1
            blocks, in_launch = 0, 0
    return launches + (1 if blocks else 0)


class Ledger(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.kernels = []
        self.ops = []
        self.depth = 0

    def add(self, op, kernel, fam, flops, nbytes_, math_):
        self.kernels.append({"op": op, "kernel": kernel, "family": fam, "flops": float(flops),
                             "bytes": float(nbytes_), "math": math_})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.depth += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.depth -= 1
        if self.depth > 0:
            return out  # an op inside a foreach's own decomposition: counted by the foreach
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        full = str(func)
        base = name.split(".")[0]
        ins = tensors(args) + tensors(list(kwargs.values()))
        outs = tensors(out)
        shapes = [list(t.shape) for t in ins]
        self.ops.append({"op": full, "inputs": [[list(t.shape), str(t.dtype)] for t in ins],
                         "outputs": [[list(t.shape), str(t.dtype)] for t in outs]})
        if base in NO_KERNEL or full.startswith("profiler"):
            return out
        half = any(t.dtype in (torch.bfloat16, torch.float16) for t in ins if t.is_floating_point())
        math_ = "tensor16" if half else "f32"
        # Each tensor once: in-place ops read and write the same tensor.
        read = sum(nbytes(t) for t in {id(t): t for t in ins}.values())
        written = sum(nbytes(t) for t in {id(t): t for t in outs}.values())
        if base == "convolution":
            x, w = ins[0], ins[1]
            y = outs[0]
            flops = 2 * y.numel() * w.numel() // w.shape[0]
            self.add(full, "cudnn_conv_fwd", "conv", flops, nbytes(x) + nbytes(w) + nbytes(y), math_)
        elif base == "convolution_backward":
            dy, x, w = ins[0], ins[1], ins[2]
            mask = args[-1]
            macs = dy.numel() * w.numel() // w.shape[0]
            if mask[0]:
                self.add(full, "cudnn_conv_bwd_data", "conv", 2 * macs, nbytes(dy) + nbytes(w) + nbytes(x), math_)
            if mask[1]:
                self.add(full, "cudnn_conv_bwd_filter", "conv", 2 * macs, nbytes(dy) + nbytes(x) + nbytes(w), math_)
        elif base in ("mm", "addmm", "bmm"):
            a, b = (ins[1], ins[2]) if base == "addmm" else (ins[0], ins[1])
            flops = 2 * a.numel() * b.shape[-1]
            self.add(full, "cublas_gemm", "gemm", flops, read + written, math_)
        elif base == "native_batch_norm":
            x, y = ins[0], outs[0]
            small = sum(nbytes(t) for t in ins[1:]) + sum(nbytes(t) for t in outs[1:])
            self.add(full, "bn_collect_statistics", "batch norm", 0, nbytes(x) + small, "memory")
            self.add(full, "bn_transform_input", "batch norm", 0, nbytes(x) + nbytes(y) + small, "memory")
        elif base == "native_batch_norm_backward":
            dy, x, dx = ins[0], ins[1], outs[0]
            small = sum(nbytes(t) for t in ins[2:]) + sum(nbytes(t) for t in outs[1:])
            self.add(full, "bn_backward_reduce", "batch norm", 0, nbytes(dy) + nbytes(x) + small, "memory")
            self.add(full, "bn_backward_elemt", "batch norm", 0, nbytes(dy) + nbytes(x) + nbytes(dx) + small, "memory")
        elif base.startswith("_foreach"):
            lists = [a for a in args if isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor)]
            n = multi_tensor_launches(lists)
            total = read + (0 if base.endswith("_") else written)
            for k in range(n):
                self.add(full, f"multi_tensor_apply[{base}]", "optimizer", 0, total / n, "memory")
        else:
            self.add(full, base, family(base), 0, read + written, "memory")
        return out


def arcface_torch_head(emb, weight, labels, s=64.0, m=0.5):
    """partial_fc (sample rate 1) + CombinedMarginLoss ArcFace + DistCrossEntropy, one GPU."""
    with CudaAutocast():
        logits = F.linear(F.normalize(emb), F.normalize(weight))
    logits = logits.float().clamp(-1, 1)
    index = torch.arange(labels.numel(), device=labels.device)  # torch.where(labels != -1)[0], no sync
    target = logits[index, labels]
    with torch.no_grad():
        target.arccos_()
        logits.arccos_()
        logits[index, labels] = target + m
        logits.cos_()
    logits = logits * s
    return DistCrossEntropy.apply(logits, labels)


class DistCrossEntropy(torch.autograd.Function):
    """arcface_torch's DistCrossEntropy with world size 1 (all-reduces are identities); the backward's
    `loss_gradient.item()` becomes a tensor product (one kernel either way)."""

    @staticmethod
    def forward(ctx, logits, label):
        max_logits, _ = torch.max(logits, dim=1, keepdim=True)
        logits.sub_(max_logits)
        logits.exp_()
        sum_exp = torch.sum(logits, dim=1, keepdim=True)
        logits.div_(sum_exp)
        index = torch.arange(label.numel(), device=label.device)
        loss = torch.zeros(label.numel(), 1, device=logits.device)
        loss[index] = logits[index].gather(1, label[index].view(-1, 1))
        ctx.save_for_backward(index, logits, label)
        return loss.clamp_min_(1e-30).log_().mean() * (-1)

    @staticmethod
    def backward(ctx, loss_gradient):
        index, logits, label = ctx.saved_tensors
        one_hot = torch.zeros(size=[index.size(0), logits.size(1)], device=logits.device)
        one_hot.scatter_(1, label[index].view(-1, 1), 1)
        logits[index] -= one_hot
        logits.div_(logits.size(0))
        return logits * loss_gradient, None


def step(backbone, batch, classes, ledger):
    dev = torch.device("meta")
    model = iresnet(backbone).to(dev).to(memory_format=torch.channels_last)
    weight = torch.nn.Parameter(torch.empty(classes, 512, device=dev))
    params = list(model.parameters()) + [weight]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
    x = torch.empty(batch, 3, 112, 112, device=dev).to(memory_format=torch.channels_last)
    labels = torch.zeros(batch, dtype=torch.long, device=dev)

    def one():
        opt.zero_grad(set_to_none=True)
        auto = CudaAutocast()
        with auto:
            feats = model.prelu(model.bn1(model.conv1(x)))
            feats = model.layer4(model.layer3(model.layer2(model.layer1(feats))))
            feats = model.dropout(torch.flatten(model.bn2(feats), 1))
        emb = model.features(model.fc(feats.float()))
        loss = arcface_torch_head(emb, weight, labels)
        loss.backward()
        opt.step()

    one()  # the first step creates the momentum buffers; the second is the steady state
    with ledger:
        one()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="r50")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--classes", type=int, default=93431)
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args()
    ledger = Ledger()
    step(a.backbone, a.batch, a.classes, ledger)
    flops = sum(k["flops"] for k in ledger.kernels)
    nb = sum(k["bytes"] for k in ledger.kernels)
    doc = {
        "meta": {
            "peer": "PyTorch eager, CUDA autocast bf16 (rules applied on meta tensors), channels-last, "
                    "insightface arcface_torch iresnet + partial_fc ArcFace + DistCrossEntropy, SGD foreach",
            "torch": torch.__version__, "backbone": a.backbone, "batch": a.batch, "classes": a.classes,
            "launches": len(ledger.kernels), "flops": flops, "bytes": nb,
            "kernel_rules": __doc__.split("Kernels per aten op")[1].split("Usage:")[0].strip(),
        },
        "kernels": ledger.kernels,
        "ops": ledger.ops,
    }
    path = os.path.join(a.out, f"pytorch_{a.backbone}_bf16_b{a.batch}.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=0)
    print(f"{path}: {len(ledger.kernels)} launches, {flops / 1e12:.2f} TFLOP, {nb / 1e9:.1f} GB per step")


if __name__ == "__main__":
    main()
