"""Writes a small insightface-style face set with MXNet's own MXIndexedRecordIO + pack_img, and the pixels
MXNet decodes from it, for datasets/tests/mxnet_parity.rs.

Usage: mxnet_recordio.py OUTDIR   (writes OUTDIR/mxnet_recordio/)

Files: train.rec, train.idx, property (as insightface's tools lay them out: images at keys 1..a-1, one
identity record per class at a..b-1, record 0 = (a, b) written last), expected.txt and pixels.u8.
expected.txt, one line per image record, tab-separated:
  key flag label_bits id id2 extra_label_bits(comma list or -) height width pixel_offset format
label bits are the f32 bit patterns in hex (exact); pixels.u8 holds mx.image.imdecode's RGB HWC bytes.
"""
import os
import struct
import sys

import numpy as np

np.bool = bool  # MXNet 1.9.1 still uses the alias removed in numpy 1.24
try:
    import cv2  # noqa: F401  (pack_img encodes with OpenCV)
except ImportError:
    sys.exit("mxnet_recordio.py: OpenCV is missing; pip install 'opencv-python-headless<4.12'")
import mxnet as mx

MAGIC_AS_F32 = struct.unpack("<f", struct.pack("<I", 0xCED7230A))[0]


def bits(x):
    return "%08x" % struct.unpack("<I", struct.pack("<f", float(x)))[0]


def face(rng, h, w, shade):
    """A smooth image (gradients plus a blob) that JPEG keeps well; BGR as OpenCV expects."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    blob = 90 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (0.2 * h) ** 2))
    img = np.stack([shade + 0.8 * x + blob, 40 + 1.5 * y, 200 - blob - 0.5 * x], axis=-1)
    return np.clip(img, 0, 255).astype(np.uint8)


def main():
    out = os.path.join(sys.argv[1], "mxnet_recordio")
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(7)
    h, w = 48, 40  # not square, so a swapped height/width shows
    per_class = [3, 1, 4]
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(out, "train.idx"), os.path.join(out, "train.rec"), "w")
    lines, pixels, ranges = [], bytearray(), []
    key = 1
    for label, n in enumerate(per_class):
        start = key
        for i in range(n):
            img = face(rng, h, w, 30 + 60 * label + 10 * i)
            fmt = ".png" if (label, i) == (2, 3) else ".jpg"
            if (label, i) == (0, 1):
                # Multi-label record whose second extra label is the RecordIO magic at an aligned offset:
                # dmlc-core splits this record into parts on disk.
                extra = [float(label), MAGIC_AS_F32, 0.5]
                header = mx.recordio.IRHeader(0, extra, key, 0)
            else:
                extra = None
                header = mx.recordio.IRHeader(0, float(label), key, 0)
            s = mx.recordio.pack_img(header, img, quality=90, img_fmt=fmt)
            rec.write_idx(key, s)
            hd, payload = mx.recordio.unpack(s)
            dec = mx.image.imdecode(payload).asnumpy()  # RGB
            assert dec.shape == (h, w, 3)
            flag = 0 if extra is None else len(extra)
            label_bits = bits(0.0 if extra is not None else label)
            extra_bits = "-" if extra is None else ",".join(bits(v) for v in extra)
            lines.append("\t".join(map(str, [key, flag, label_bits, key, 0, extra_bits, h, w, len(pixels), fmt[1:]])))
            pixels += dec.tobytes()
            key += 1
        ranges.append((start, key))
    first_id = key
    for start, end in ranges:
        rec.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, (start, end), key, 0), b""))
        key += 1
    rec.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(0, (first_id, key), 0, 0), b""))
    rec.close()
    with open(os.path.join(out, "property"), "w") as f:
        f.write("%d,%d,%d" % (len(per_class), h, w))
    with open(os.path.join(out, "expected.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "pixels.u8"), "wb") as f:
        f.write(bytes(pixels))
    print("mxnet_recordio: %d images, %d classes -> %s" % (len(lines), len(per_class), out))


if __name__ == "__main__":
    main()
