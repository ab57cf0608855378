"""Loads an engine export into the PyTorch IResNet with strict=True and writes its eval-mode embeddings.
Usage: _load_export.py MODEL.safetensors INPUT.safetensors OUT.safetensors LAYERS WIDTHS H W EMB
(LAYERS and WIDTHS comma-separated). Called by tests/parity_model.rs; not a fixture script."""
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _iresnet_torch import IResNet  # noqa: E402

model_path, input_path, out_path, layers, widths, h, w, emb = sys.argv[1:9]
state = load_file(model_path)
dtype = state["conv1.weight"].dtype
net = IResNet([int(v) for v in layers.split(",")], tuple(int(v) for v in widths.split(",")), (int(h), int(w)),
              int(emb)).to(dtype)
net.load_state_dict(state, strict=True)
net.eval()
with torch.no_grad():
    y = net(load_file(input_path)["x"].to(dtype))
save_file({"embedding": y.contiguous()}, out_path)
