"""A generated TinyFace test set in the release layout and the rank-1/5/20 AdaFace's evaluation computes
on it (validation_lq/tinyface_helper.py: TinyFaceTest with its file listing, name-prefix labels and
aligned-copy lookup, then DIR_FAR with FARs=[1.0]), written from that code's steps; plus MAT files of
several kinds for the MAT reader's test.

Usage: tinyface_ref.py OUT_DIR. Writes
  OUT_DIR/tinyface/root/: tinyface/Testing_Set/{probe_img_ID_pairs.mat (zlib-compressed, double ids),
      gallery_match_img_ID_pairs.mat (uncompressed, uint16 ids), Probe/, Gallery_Match/,
      Gallery_Distractor/} and aligned_pad_0.1_pad_high/{Probe, Gallery_Match, Gallery_Distractor} with
      112x112 images (aligned probes as .png under .jpg names, distractors in sub-folders);
  OUT_DIR/tinyface/features.safetensors: `features` [N, D] float32 in our row order (probes and gallery
      matches in .mat order, then distractors by sorted path); OUT_DIR/tinyface/expected.json;
  OUT_DIR/matlab/various.mat (+ various_c.mat compressed) and various.json (what scipy.io.loadmat reads).
"""
import json
import os
import sys

import numpy as np

try:
    import cv2
    import scipy.io
    from safetensors.numpy import save_file
except ImportError as e:
    sys.exit(f"tinyface_ref.py: {e}; pip install scipy safetensors 'opencv-python-headless<4.12'")

ALIGNED = "aligned_pad_0.1_pad_high"


def get_all_files(root, extension_list=(".jpg", ".png", ".jpeg")):
    """AdaFace's listing: os.walk, extension (as written) in the list."""
    out = []
    for dirpath, _, filenames in os.walk(root):
        out += [os.path.join(dirpath, f) for f in filenames]
    return [f for f in out if os.path.splitext(f)[1] in extension_list]


def key(path):
    return os.path.splitext(os.path.basename(path))[0]


def label(path):
    return int(os.path.basename(path).split("_")[0])


def dir_far_closed(score_mat, label_mat, ranks):
    """DIR_FAR with FARs=[1.0]: closed-set CMC over the probes that have a match."""
    match = label_mat.astype(bool).any(axis=1)
    s, lm = score_mat[match], label_mat[match]
    order = np.argsort(s, axis=1)
    sorted_labels = np.array([lm[r, order[r][::-1]] for r in range(lm.shape[0])])
    return [float(sorted_labels[:, :k].any(axis=1).astype(np.float32).mean()) for k in ranks], int(match.sum())


def image(rng, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, rng.randint(0, 256, (112, 112, 3)).astype(np.uint8))


def write_tinyface(out, rng):
    root = os.path.join(out, "root")
    testing = os.path.join(root, "tinyface", "Testing_Set")
    aligned = os.path.join(root, ALIGNED)
    dim, n_ids = 16, 30
    centres = rng.normal(size=(n_ids, dim))
    probe, gallery = [], []  # (name, id)
    for i in range(1, n_ids + 1):
        for k in range(rng.randint(1, 4)):
            gallery.append((f"{i}_{k + 1}.jpg", i))
        for k in range(rng.randint(1, 3)):
            probe.append((f"{i}_{k + 10}.jpg", i))
    probe.append((f"{n_ids + 5}_1.jpg", n_ids + 5))  # a probe whose identity has no gallery image
    feats = {}  # aligned path -> feature
    for names, role in ((probe, "Probe"), (gallery, "Gallery_Match")):
        for name, i in names:
            # The release's own image (AdaFace only lists these folders; the content is not read).
            os.makedirs(os.path.join(testing, role), exist_ok=True)
            open(os.path.join(testing, role, name), "wb").close()
            ext = ".png" if role == "Probe" else ".jpg"
            p = os.path.join(aligned, role, os.path.splitext(name)[0] + ext)
            image(rng, p)
            c = centres[(i - 1) % n_ids]
            feats[p] = (c + rng.normal(0, 0.9 if role == "Probe" else 0.5, dim)).astype(np.float32)
    distractors = []
    for k in range(200):
        p = os.path.join(aligned, "Gallery_Distractor", f"sub{k % 3}", f"d{k:04d}.jpg")
        image(rng, p)
        feats[p] = rng.normal(size=dim).astype(np.float32)
        os.makedirs(os.path.join(testing, "Gallery_Distractor"), exist_ok=True)
        open(os.path.join(testing, "Gallery_Distractor", f"d{k:04d}.jpg"), "wb").close()
    cell = lambda names: np.array([n for n, _ in names], dtype=object).reshape(-1, 1)
    scipy.io.savemat(os.path.join(testing, "probe_img_ID_pairs.mat"),
                     {"probe_set": cell(probe), "probe_ids": np.array([i for _, i in probe], dtype=np.float64).reshape(-1, 1)},
                     do_compression=True)
    scipy.io.savemat(os.path.join(testing, "gallery_match_img_ID_pairs.mat"),
                     {"gallery_set": cell(gallery), "gallery_ids": np.array([i for _, i in gallery], dtype=np.uint16).reshape(-1, 1)},
                     do_compression=False)
    # Normalized features, as AdaFace's inference returns them.
    for p in feats:
        feats[p] = feats[p] / np.linalg.norm(feats[p])
    # Our row order: probes and gallery matches in .mat order, distractors by sorted path.
    rows = [os.path.join(aligned, "Probe", os.path.splitext(n)[0] + ".png") for n, _ in probe]
    rows += [os.path.join(aligned, "Gallery_Match", n) for n, _ in gallery]
    rows += sorted(p for p in feats if "Gallery_Distractor" in p)
    save_file({"features": np.stack([feats[p] for p in rows])}, os.path.join(out, "features.safetensors"))
    with open(os.path.join(out, "rows.txt"), "w") as f:
        f.writelines(os.path.relpath(p, root) + "\n" for p in rows)

    # AdaFace's protocol: every aligned image indexed by key; probes, matches and distractors from the
    # release's folders; labels from the name's prefix.
    image_paths = get_all_files(aligned)
    index = {key(p): i for i, p in enumerate(image_paths)}
    features = np.stack([feats[p] for p in image_paths])
    probe_paths = get_all_files(os.path.join(testing, "Probe"))
    match_paths = get_all_files(os.path.join(testing, "Gallery_Match"))
    distractor_paths = get_all_files(os.path.join(testing, "Gallery_Distractor"))
    ip = np.array([index[key(p)] for p in probe_paths])
    ig = np.concatenate([[index[key(p)] for p in match_paths], [index[key(p)] for p in distractor_paths]]).astype(int)
    lp = np.array([label(p) for p in probe_paths])
    lg = np.concatenate([[label(p) for p in match_paths], [-100] * len(distractor_paths)])
    score = np.dot(features[ip], features[ig].T)
    ranks, mated = dir_far_closed(score, lp[:, None] == lg[None, :], [1, 5, 20])
    exp = {"rank1": ranks[0], "rank5": ranks[1], "rank20": ranks[2], "probes": len(probe_paths), "mated": mated,
           "gallery_match": len(match_paths), "distractors": len(distractor_paths)}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    return exp


def nested():
    c = np.empty((1, 2), dtype=object)
    c[0, 0] = np.array(["inner"], dtype=object)
    c[0, 1] = np.array([[1.0, 2.0]])
    return c


def write_matlab(out):
    os.makedirs(out, exist_ok=True)
    v = {
        "names": np.array(["a_1.jpg", "bb_22.png", "ccc.jpeg"], dtype=object).reshape(-1, 1),
        "ids_double": np.array([[1.5, -2.0, 3e10]]),
        "ids_int8": np.array([[-3, 4], [5, -6]], dtype=np.int8),
        "ids_int32": np.array([[7], [-8], [900000]], dtype=np.int32),
        "ids_uint16": np.array([[65535, 0, 12]], dtype=np.uint16),
        "ids_single": np.array([[0.25, 1e-3]], dtype=np.float32),
        "flags": np.array([[True, False, True]]),
        "text_rows": np.array(["abc", "xyz"]),
        "nested": nested(),
        "empty": np.zeros((0, 0)),
        "unicode": "Zürich",
    }
    scipy.io.savemat(os.path.join(out, "various.mat"), v, do_compression=False)
    scipy.io.savemat(os.path.join(out, "various_c.mat"), v, do_compression=True)
    back = scipy.io.loadmat(os.path.join(out, "various.mat"))
    expect = {}
    for k in v:
        a = back[k]
        if a.dtype == object:
            expect[k] = {"cell": list(a.shape)}
        elif a.dtype.kind == "U":
            expect[k] = {"strings": [str(s) for s in a.reshape(-1)], "shape": list(a.shape)}
        else:
            expect[k] = {"values": a.T.reshape(-1).astype(float).tolist(), "shape": list(a.shape)}  # column-major
    expect["names"]["strings"] = [str(x[0]) for x in back["names"][:, 0]]
    with open(os.path.join(out, "various.json"), "w") as f:
        json.dump(expect, f, indent=1)


def main():
    out = os.path.join(sys.argv[1], "tinyface")
    if os.path.isdir(out):
        import shutil
        shutil.rmtree(out)
    os.makedirs(out)
    exp = write_tinyface(out, np.random.RandomState(21))
    write_matlab(os.path.join(sys.argv[1], "matlab"))
    print(f"tinyface_ref.py: {exp['probes']} probes, {exp['gallery_match']} gallery, {exp['distractors']} distractors: "
          f"rank-1 {exp['rank1']:.4f} rank-5 {exp['rank5']:.4f} rank-20 {exp['rank20']:.4f}")


if __name__ == "__main__":
    main()
