"""OpenCV's cv2.resize on one test image, for datasets/tests/cv2_resize_parity.rs: the low-resolution
augmentation follows AdaFace, which draws its filters from OpenCV's nearest, linear, area, cubic and
Lanczos-4.

Usage: cv2_resize.py OUTDIR   (writes OUTDIR/cv2_resize/)
Files: src.u8 (HxWx3 bytes) and cases.txt, one line per case: filter src_h src_w dst_h dst_w file,
each file holding cv2.resize's dst_h x dst_w x 3 bytes.
"""
import os
import sys

import numpy as np

try:
    import cv2
except ImportError:
    sys.exit("cv2_resize.py: OpenCV is missing; pip install 'opencv-python-headless<4.12'")

FILTERS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos4": cv2.INTER_LANCZOS4,
}
# Down and up at AdaFace's sizes (112 -> [22, 112) -> 112), plus odd, non-square and integer-ratio cases.
SIZES = [(23, 23), (56, 56), (77, 77), (111, 111), (112, 112), (37, 50), (150, 131), (224, 224)]


def main():
    out = os.path.join(sys.argv[1], "cv2_resize")
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(7)
    h, w = 112, 112
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0), 2 * x, 255 - 2 * y], axis=-1)
    src = np.clip(smooth + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    src.tofile(os.path.join(out, "src.u8"))
    lines = []
    for name, code in FILTERS.items():
        for dh, dw in SIZES:
            dst = cv2.resize(src, (dw, dh), interpolation=code)
            f = "%s_%dx%d.u8" % (name, dh, dw)
            dst.tofile(os.path.join(out, f))
            lines.append("%s %d %d %d %d %s" % (name, h, w, dh, dw, f))
    with open(os.path.join(out, "cases.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
