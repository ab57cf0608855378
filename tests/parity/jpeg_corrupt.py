"""Corrupt JPEGs and what OpenCV's libjpeg-turbo says about each, for datasets/tests/jpeg_oracle.rs.

Usage: jpeg_corrupt.py OUTDIR   (writes OUTDIR/jpeg_corrupt/)

Seven clean face-sized images are encoded by cv2.imencode in the layouts face sets hold (4:2:0 at
quality 95 as insightface's packers write, 4:4:4, 4:2:2, grayscale, restart markers every 2 MCUs,
optimized Huffman tables, progressive), then damaged inside the entropy-coded data: one flipped bit,
several flipped bits, a byte set to 0xFF, or the file cut before its end. Each damaged file is decoded
by cv2.imdecode with file descriptor 2 captured: the file counts as flagged when OpenCV returns None or
libjpeg-turbo prints anything ("Corrupt JPEG data: ...", "Premature end of JPEG file"). Many flipped
bits decode without a word in every decoder; this oracle says which ones libjpeg-turbo notices.

Files: <base>.jpg (clean), <base>_<k>.jpg (damaged), labels.txt: one line per file,
"name<TAB>flagged(0/1)<TAB>what libjpeg-turbo printed (or -)".
"""
import os
import sys

import numpy as np

try:
    import cv2
except ImportError:
    sys.exit("jpeg_corrupt.py: OpenCV is missing; pip install 'opencv-python-headless<4.12'")


def decode_with_messages(data):
    """cv2.imdecode with fd 2 captured: (image or None, what libjpeg-turbo printed)."""
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    os.close(w)
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    chunks = []
    os.set_blocking(r, False)
    while True:
        try:
            c = os.read(r, 65536)
        except BlockingIOError:
            break
        if not c:
            break
        chunks.append(c)
    os.close(r)
    return img, b"".join(chunks).decode(errors="replace").strip()


def face(rng, gray=False):
    """A 112x112 image with gradients, edges and noise, like an aligned face crop's statistics."""
    yy, xx = np.mgrid[0:112, 0:112].astype(np.float64)
    r = np.hypot(xx - 56, yy - 60)
    img = np.stack(
        [128 + 90 * np.cos(r / 9), 100 + 0.8 * xx + 20 * np.sin(yy / 5), 60 + 1.2 * yy - 0.3 * xx], -1
    )
    img += rng.normal(0, 12, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img


def scan_data_range(b):
    """First and last byte (exclusive) of the first scan's entropy-coded data."""
    i = b.index(b"\xff\xda")
    start = i + 2 + int.from_bytes(b[i + 2 : i + 4], "big")
    end = len(b) - 2  # before EOI
    return start, end


def main(out):
    d = os.path.join(out, "jpeg_corrupt")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(14)
    q = cv2.IMWRITE_JPEG_QUALITY
    bases = {
        "s420_q95": (face(rng), [q, 95]),
        "s444_q90": (face(rng), [q, 90, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]),
        "s422_q85": (face(rng), [q, 85, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422]),
        "gray_q95": (face(rng, gray=True), [q, 95]),
        "rst2_q90": (face(rng), [q, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        "optimized_q75": (face(rng), [q, 75, cv2.IMWRITE_JPEG_OPTIMIZE, 1]),
        "progressive_q90": (face(rng), [q, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    }
    lines = []
    for name, (img, params) in bases.items():
        ok, enc = cv2.imencode(".jpg", img, params)
        assert ok, name
        b = bytes(enc)
        _, msg = decode_with_messages(b)
        assert msg == "", f"{name}: the clean file already warns: {msg}"
        with open(os.path.join(d, f"{name}.jpg"), "wb") as f:
            f.write(b)
        lines.append(f"{name}.jpg\t0\t-")
        start, end = scan_data_range(b)
        for k in range(60):
            c = bytearray(b)
            kind = k % 6
            if kind <= 2:  # one flipped bit (half of the cases)
                pos = int(rng.integers(start, end))
                c[pos] ^= 1 << int(rng.integers(0, 8))
            elif kind == 3:  # three flipped bits
                for _ in range(3):
                    pos = int(rng.integers(start, end))
                    c[pos] ^= 1 << int(rng.integers(0, 8))
            elif kind == 4:  # a byte turned into 0xFF (a marker prefix in the data)
                c[int(rng.integers(start, end))] = 0xFF
            else:  # cut short inside the scan data
                c = c[: int(rng.integers(start + 1, end))]
            img2, msg = decode_with_messages(bytes(c))
            flagged = img2 is None or msg != ""
            fname = f"{name}_{k:02d}.jpg"
            with open(os.path.join(d, fname), "wb") as f:
                f.write(c)
            said = msg.replace("\t", " ").replace("\n", " | ") or ("imdecode returned None" if img2 is None else "-")
            lines.append(f"{fname}\t{int(flagged)}\t{said}")
    with open(os.path.join(d, "labels.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    flagged = sum(1 for l in lines if l.split("\t")[1] == "1")
    print(f"jpeg_corrupt: {len(lines)} files, {flagged} flagged by libjpeg-turbo")


if __name__ == "__main__":
    main(sys.argv[1])
