"""PyTorch CPU peer of engine/examples/bench_iresnet.rs: forward + backward of an IResNet in training
mode, f32, NCHW, loss sum(emb * r). Usage: iresnet_torch.py NAME BATCH ITERS THREADS."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "parity"))
from _iresnet_torch import IResNet, iresnet  # noqa: E402

name, batch, iters, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = IResNet([1, 1, 1, 1], (16, 32, 64, 128), (112, 112), 128) if name == "small" else iresnet(name)
net.train()
x = torch.randn(batch, 3, 112, 112)


def step():
    t0 = time.perf_counter()
    net.zero_grad(set_to_none=True)
    emb = net(x)
    (emb * torch.ones_like(emb)).sum().backward()
    return time.perf_counter() - t0


step()
times = sorted(step() for _ in range(iters))
median = times[len(times) // 2]
print(f"torch {torch.__version__} {name} batch {batch} threads {torch.get_num_threads()}: "
      f"median {median:.3f} s/iter, {batch / median:.2f} images/s (forward+backward)")
