"""insightface's own ONNX recognition class on our exports. Called by bin/tests/import_export_cli.rs;
not a fixture script.
  _insightface_check.py crops OUT_DIR
      112x112 face crops from the images the insightface package ships (insightface/data/images): the
      aligned Tom_Hanks_54745.png, and a crop of t1.jpg around a face; written as PNG (exact pixels for
      both sides) with a list.txt for `engine-train embed`.
  _insightface_check.py features MODEL.onnx LIST OUT.safetensors
      insightface.model_zoo.get_model routes the file (a 112x112 input makes it an ArcFaceONNX, which
      reads its first nodes' names to choose the normalization); its get_feat on each crop, read with
      cv2 (BGR, as insightface's callers pass images), saved as `embedding`, with the class it got and
      the input mean/std it chose as metadata."""
import os
import shutil
import sys

import cv2
import numpy as np


def crops(out):
    import insightface
    images = os.path.join(os.path.dirname(insightface.__file__), "data", "images")
    os.makedirs(out, exist_ok=True)
    tom = cv2.imread(os.path.join(images, "Tom_Hanks_54745.png"))
    assert tom.shape == (112, 112, 3), tom.shape
    cv2.imwrite(os.path.join(out, "tom_hanks.png"), tom)
    t1 = cv2.imread(os.path.join(images, "t1.jpg"))
    # t1.jpg is a group photo (1280x886); this 140x140 square holds a face, resized to the model's input.
    crop = cv2.resize(t1[225:365, 470:610], (112, 112), interpolation=cv2.INTER_AREA)
    cv2.imwrite(os.path.join(out, "t1_crop.png"), crop)
    with open(os.path.join(out, "list.txt"), "w") as f:
        f.write("tom_hanks.png 0\nt1_crop.png 1\n")
    print(f"crops from {images} -> {out}")


def features(model_path, list_path, out):
    import insightface
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX
    from safetensors.numpy import save_file
    model = insightface.model_zoo.get_model(model_path, providers=["CPUExecutionProvider"])
    assert isinstance(model, ArcFaceONNX), f"insightface routed {model_path} to {type(model).__name__}"
    model.prepare(ctx_id=-1)
    base = os.path.dirname(list_path)
    names = [line.split()[0] for line in open(list_path) if line.strip()]
    feats = [model.get_feat(cv2.imread(os.path.join(base, n))).reshape(-1) for n in names]
    meta = {"class": type(model).__name__, "input_mean": str(model.input_mean), "input_std": str(model.input_std),
            "input_size": "x".join(str(v) for v in model.input_size), "insightface": insightface.__version__}
    save_file({"embedding": np.stack(feats).astype(np.float32)}, out, metadata=meta)
    print(f"{os.path.basename(model_path)}: {meta}")


if __name__ == "__main__":
    if sys.argv[1] == "crops":
        crops(sys.argv[2])
    elif sys.argv[1] == "features":
        features(*sys.argv[2:5])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
