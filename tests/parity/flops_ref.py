"""PyTorch's own FLOP count of IR-50 (insightface's iresnet50, 112x112, 512-d) for one training step's
forward and backward, per image, by torch.utils.flop_counter.FlopCounterMode on the CPU at batch 2: the
independent count the step ledger's FLOPs are checked against (check/src/bench/ledger.rs).
Usage: flops_ref.py OUT_DIR; writes ir50_flops.json."""
import json
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _iresnet_torch import iresnet  # noqa: E402


def main(out):
    torch.manual_seed(0)
    model = iresnet("r50")
    model.train()
    batch = 2
    x = torch.randn(batch, 3, 112, 112)
    counter = FlopCounterMode(display=False)
    with counter:
        emb = model(x)
        (emb * torch.randn_like(emb)).sum().backward()
    per_op = {str(k): v / batch for k, v in counter.get_flop_counts()["Global"].items()}
    conv = sum(v for k, v in per_op.items() if "convolution" in k)
    gemm = sum(v for k, v in per_op.items() if k.split(".")[-1].startswith(("mm", "addmm", "bmm")))
    result = {"batch": batch, "conv_flops_per_image": conv, "gemm_flops_per_image": gemm,
              "total_flops_per_image": counter.get_total_flops() / batch, "per_op": per_op}
    with open(os.path.join(out, "ir50_flops.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"ir50_flops: {conv / 1e9:.3f} GFLOP conv + {gemm / 1e9:.3f} GFLOP fc per image (fwd + bwd)")


if __name__ == "__main__":
    main(sys.argv[1])
