"""Called by datasets/tests/mxnet_parity.rs with a directory the Rust writer filled: reads train.rec/.idx
with MXNet the way insightface's MXFaceDataset does and checks every header against expected.txt and every
image (mx.image.imdecode) against the Rust decoder's pixels; also loads pairs.bin as verification.py does.
Exits non-zero with a message on the first mismatch."""
import os
import pickle
import struct
import sys

import numpy as np

np.bool = bool
import mxnet as mx


def bits(x):
    return "%08x" % struct.unpack("<I", struct.pack("<f", float(x)))[0]


def main():
    d = sys.argv[1]
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"), os.path.join(d, "train.rec"), "r")
    header0, _ = mx.recordio.unpack(rec.read_idx(0))
    assert header0.flag > 0, "record 0 has no identity range"
    a, b = int(header0.label[0]), int(header0.label[1])
    lines = [l.split("\t") for l in open(os.path.join(d, "expected.txt")).read().splitlines() if l]
    assert list(range(1, a)) == [int(l[0]) for l in lines], "image keys %r vs 1..%d" % ([l[0] for l in lines], a)
    pixels = np.fromfile(os.path.join(d, "pixels.u8"), dtype=np.uint8)
    for l in lines:
        key, flag, label_bits, id_, id2, extra, h, w, off = l[:9]
        header, img = mx.recordio.unpack(rec.read_idx(int(key)))
        assert header.flag == int(flag), (key, header.flag, flag)
        if header.flag > 0:
            got = ",".join(bits(v) for v in header.label)
            assert got == extra, (key, got, extra)
        else:
            assert bits(header.label) == label_bits, (key, header.label, label_bits)
        assert (header.id, header.id2) == (int(id_), int(id2)), (key, header.id, header.id2)
        dec = mx.image.imdecode(img).asnumpy()
        h, w, off = int(h), int(w), int(off)
        assert dec.shape == (h, w, 3), (key, dec.shape)
        ours = pixels[off:off + h * w * 3].reshape(h, w, 3)
        diff = np.abs(dec.astype(np.int32) - ours.astype(np.int32))
        assert diff.mean() < 1.0 and diff.max() <= 8, (key, diff.mean(), diff.max())
    ranges = []
    for k in range(a, b):
        h, _ = mx.recordio.unpack(rec.read_idx(k))
        ranges.append((int(h.label[0]), int(h.label[1])))
    covered = sorted(k for s, e in ranges for k in range(s, e))
    assert covered == list(range(1, a)), ("identity ranges", ranges)
    # Sequential reading (no index) sees every record once, split ones joined.
    seq = mx.recordio.MXRecordIO(os.path.join(d, "train.rec"), "r")
    count = 0
    while seq.read() is not None:
        count += 1
    assert count == b, ("sequential records", count, b)
    with open(os.path.join(d, "pairs.bin"), "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert isinstance(bins, list) and isinstance(issame, list) and issame == [True, False], issame
    for x in bins:
        assert mx.image.imdecode(x).shape[2] == 3
    print("mxnet read %d images, %d identities, %d pairs" % (len(lines), len(ranges), len(issame)))


if __name__ == "__main__":
    main()
