"""A minimal safetensors writer, used where PyTorch comes without the safetensors package (the GPU
machines have no network to install it). Format: 8-byte little-endian header size, a JSON header naming
each tensor's dtype, shape and byte range, then the little-endian data."""
import json
import os

import torch

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def load_save_file():
    """safetensors.torch.save_file, or this module's when the package is missing (or FACETRAIN_ST_FALLBACK=1,
    which is how CI tests this writer)."""
    if os.environ.get("FACETRAIN_ST_FALLBACK") != "1":
        try:
            from safetensors.torch import save_file as real
            return real
        except ImportError:
            pass
    return save_file


def save_file(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    # Widest dtype first, then by name: the order the reference writer lays the data out in.
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):
        t = tensors[name].detach().cpu().contiguous()
        # Raw bytes through a uint8 view (numpy has no bfloat16); x86-64 and aarch64 are little-endian.
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned, as the reference writer pads it
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
