"""Runs every ONNX export in a folder with ONNX Runtime (CPU) after onnx's own checker has validated it.
Usage: _onnx_run.py DIR. For each NAME.onnx with NAME.input.safetensors (`feed`: RGB as (x-127.5)/127.5,
`raw`: 0..255 pixels, both NCHW f32) writes NAME.ort.safetensors (`embedding`), feeding `raw` when the
model's metadata says the normalization is inside. Called by tests/onnx_export.rs; not a fixture script."""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from safetensors.numpy import load_file, save_file

folder = sys.argv[1]
for path in sorted(glob.glob(os.path.join(folder, "*.onnx"))):
    name = path[:-len(".onnx")]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    opset = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")][0]
    assert opset >= 17, f"{path}: opset {opset}"
    inputs = load_file(name + ".input.safetensors")
    x = inputs["raw"] if meta.get("normalization_inside") == "true" else inputs["feed"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == list(x.shape[1:]), f"{path}: input shape {shape}"
    y = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    save_file({"embedding": np.ascontiguousarray(y, dtype=np.float32)}, name + ".ort.safetensors")
    print(f"{os.path.basename(path)}: opset {opset}, input {shape}, output {list(y.shape)}")
