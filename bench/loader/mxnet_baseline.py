"""insightface's MXFaceDataset read path on the same face set, one process (= one thread of work):
MXIndexedRecordIO.read_idx in shuffled order, recordio.unpack, decode (mx.image.imdecode, or OpenCV's
cv2.imdecode = libjpeg-turbo), random horizontal flip, ((x / 255) - 0.5) / 0.5 to float32.

Usage: mxnet_baseline.py DIR"""
import os
import sys
import time

import numpy as np

np.bool = bool
import mxnet as mx

try:
    import cv2
except ImportError:
    cv2 = None


def run(d, decode, name):
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"), os.path.join(d, "train.rec"), "r")
    h0, _ = mx.recordio.unpack(rec.read_idx(0))
    keys = np.arange(1, int(h0.label[0]))
    rng = np.random.RandomState(0)
    rng.shuffle(keys)
    t = time.perf_counter()
    for k in keys:
        header, img = mx.recordio.unpack(rec.read_idx(int(k)))
        x = decode(img)
        if rng.rand() < 0.5:
            x = x[:, ::-1, :]
        x = ((x.astype(np.float32) / 255.0) - 0.5) / 0.5
    rate = len(keys) / (time.perf_counter() - t)
    print("%s: %.0f images/s" % (name, rate))


def main():
    d = sys.argv[1]
    run(d, lambda b: mx.image.imdecode(b).asnumpy(), "MXFaceDataset path (mx.image.imdecode), 1 thread")
    if cv2 is not None:
        run(d, lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1],
            "same path with cv2.imdecode (libjpeg-turbo), 1 thread")
    else:
        print("cv2 not installed: OpenCV row skipped")


if __name__ == "__main__":
    main()
