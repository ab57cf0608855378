"""Reference face alignments for datasets/tests/align_parity.rs: scikit-image's SimilarityTransform (the
estimate insightface's norm_crop and eval_ijbc.py use), OpenCV's warpAffine with a black border, and
insightface's own norm_crop (its face_align.py, loaded by file path so that the package's ONNX Runtime
import is not needed).

Usage: align_ref.py OUT_DIR   (writes OUT_DIR/align/)
Files: cases.txt, one line per case:
    name h w n_points template x1 y1 ... (2 * n_points landmark values, as float32 reprs)
        m00 m01 m02 m10 m11 m12 (scikit-image's matrix from the five points onto the template, estimated
        from float32 arrays as insightface passes them: scikit-image then computes in float32)
        d00 d01 d02 d10 d11 d12 (the same estimated from float64 arrays)
and NAME.src.u8 (h x w x 3), NAME.cv2.u8 (112 x 112 x 3: cv2.warpAffine with that matrix),
NAME.insightface.u8 (norm_crop's output; only for cases on insightface's template).
`template` is `arcface` (insightface's arcface_dst) or `eval_ijbc` (eval_ijbc.py's 96x112 + 8 copy).
"""
import importlib.util
import os
import site
import sys
import warnings

import numpy as np

try:
    import cv2
    from skimage import transform as trans
except ImportError as e:
    sys.exit(f"align_ref.py: {e}; pip install scikit-image 'opencv-python-headless<4.12'")

ARCFACE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                    [70.7299, 92.2041]], dtype=np.float32)
EVAL_IJBC = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                      [62.7299, 92.2041]], dtype=np.float32)
EVAL_IJBC[:, 0] += 8.0


def insightface_face_align():
    """insightface/utils/face_align.py from the installed wheel, or None when it is not installed."""
    for base in site.getsitepackages():
        path = os.path.join(base, "insightface", "utils", "face_align.py")
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location("insightface_face_align", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    return None


def image(rng, h, w):
    """Smooth colour gradients plus mild noise and one sharp-edged block: the warp's error bound depends
    on the local contrast, so both kinds are present."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([128 + 90 * np.sin(x / 11.0) * np.cos(y / 17.0), 255 * x / w, 255 - 200 * y / h], -1)
    img = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255)
    img[h // 3:h // 2, w // 4:w // 2] = [250, 20, 200]
    return img.astype(np.uint8)


def five_from_68(p):
    """eval_ijbc.py's reduction, in float32."""
    out = np.zeros((5, 2), dtype=np.float32)
    out[0] = (p[36] + p[39]) / 2
    out[1] = (p[42] + p[45]) / 2
    out[2] = p[30]
    out[3] = p[48]
    out[4] = p[54]
    return out


def main():
    out = os.path.join(sys.argv[1], "align")
    os.makedirs(out, exist_ok=True)
    warnings.simplefilter("ignore")  # scikit-image 0.26 deprecates estimate(); insightface still calls it
    fa = insightface_face_align()
    if fa is None:
        sys.exit("align_ref.py: insightface is not installed (tests/run.sh installs it with --no-deps)")
    rng = np.random.RandomState(13)
    lines = []
    # (h, w, scale, angle in degrees, landmark noise in px, points, template)
    specs = [
        (160, 140, 1.3, 8.0, 1.5, 5, "arcface"),
        (250, 250, 2.2, -25.0, 3.0, 5, "arcface"),
        (90, 120, 0.7, 40.0, 1.0, 5, "arcface"),
        (112, 112, 1.0, 0.0, 0.0, 5, "arcface"),
        (200, 180, 1.6, 15.0, 2.0, 5, "eval_ijbc"),
        (140, 100, 1.1, -10.0, 1.0, 68, "eval_ijbc"),
        (60, 60, 0.45, 5.0, 0.5, 5, "arcface"),
    ]
    for k, (h, w, scale, deg, noise, npts, tname) in enumerate(specs):
        template = ARCFACE if tname == "arcface" else EVAL_IJBC
        img = image(rng, h, w)
        a = np.deg2rad(deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = np.array([w / 2.0, h / 2.0])
        five = (template - 56.0) @ rot.T * scale + centre + rng.normal(0, noise, (5, 2))
        five = five.astype(np.float32)
        if npts == 68:
            pts = rng.uniform(0, min(h, w), (68, 2)).astype(np.float32)
            # Place the points eval_ijbc reads so that the reduction lands on `five`.
            pts[36], pts[39] = five[0] - [3, 1], five[0] + [3, 1]
            pts[42], pts[45] = five[1] - [2, -1], five[1] + [2, -1]
            pts[30], pts[48], pts[54] = five[2], five[3], five[4]
            lmk5 = five_from_68(pts)
        else:
            pts = five
            lmk5 = five
        tform = trans.SimilarityTransform()
        tform.estimate(lmk5, template)
        m = tform.params[0:2, :]
        tform64 = trans.SimilarityTransform()
        tform64.estimate(lmk5.astype(np.float64), template.astype(np.float64))
        m64 = tform64.params[0:2, :]
        warped = cv2.warpAffine(img, m, (112, 112), borderValue=0.0)
        name = f"case{k}"
        img.tofile(os.path.join(out, name + ".src.u8"))
        warped.tofile(os.path.join(out, name + ".cv2.u8"))
        if tname == "arcface":
            fa.norm_crop(img, lmk5).tofile(os.path.join(out, name + ".insightface.u8"))
        vals = " ".join(repr(float(v)) for v in pts.reshape(-1))
        mat = " ".join(repr(float(v)) for v in np.concatenate([m.reshape(-1), m64.reshape(-1)]))
        lines.append(f"{name} {h} {w} {npts} {tname} {vals} {mat}")
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"align_ref.py: {len(lines)} cases in {out}")


if __name__ == "__main__":
    main()
