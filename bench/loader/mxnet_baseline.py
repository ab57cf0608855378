"""insightface's MXFaceDataset read path on the same face set, one process (= one thread of work):
MXIndexedRecordIO.read_idx in shuffled order, recordio.unpack, decode (mx.image.imdecode, or OpenCV's
cv2.imdecode = libjpeg-turbo), random horizontal flip, ((x / 255) - 0.5) / 0.5 to float32.

With --adaface (needs Pillow), each image also goes through AdaFace's training augmentation the way its
own data pipeline runs it on these records: a PIL image; crop with zero padding at p 0.2 (torchvision's
RandomResizedCrop window rule, scale 0.2-1, ratio 3/4-4/3); low resolution at p 0.2 (cv2.resize down to a
side in [0.2, 1] x 112 and back, each step with one of nearest, linear, area, cubic, Lanczos-4); colour
jitter at p 0.2 (brightness, contrast, saturation 0.5 in random order, with PIL's ImageEnhance, which is
what torchvision's ColorJitter calls on PIL images).

Usage: mxnet_baseline.py DIR [--adaface]"""
import math
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


def crop_window(rng, h, w):
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(0.2, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1), ch, cw
    return 0, 0, h, w


def adaface_augment(rng, x):
    from PIL import Image, ImageEnhance

    sample = Image.fromarray(x)
    if rng.rand() < 0.2:
        arr = np.array(sample)
        new = np.zeros_like(arr)
        i, j, h, w = crop_window(rng, arr.shape[0], arr.shape[1])
        new[i:i + h, j:j + w] = arr[i:i + h, j:j + w]
        sample = Image.fromarray(new)
    if rng.rand() < 0.2:
        arr = np.array(sample)
        side = int(rng.uniform(0.2, 1.0) * arr.shape[0])
        filters = [cv2.INTER_NEAREST, cv2.INTER_LINEAR, cv2.INTER_AREA, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4]
        small = cv2.resize(arr, (side, side), interpolation=filters[rng.randint(5)])
        arr = cv2.resize(small, (arr.shape[1], arr.shape[0]), interpolation=filters[rng.randint(5)])
        sample = Image.fromarray(arr.astype(np.uint8))
    if rng.rand() < 0.2:
        for op in rng.permutation(3):
            f = rng.uniform(0.5, 1.5)
            enhancer = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[op]
            sample = enhancer(sample).enhance(f)
    return np.asarray(sample)


def run(d, decode, name, adaface):
    rec = mx.recordio.MXIndexedRecordIO(os.path.join(d, "train.idx"), os.path.join(d, "train.rec"), "r")
    h0, _ = mx.recordio.unpack(rec.read_idx(0))
    keys = np.arange(1, int(h0.label[0]))
    rng = np.random.RandomState(0)
    rng.shuffle(keys)
    t = time.perf_counter()
    for k in keys:
        header, img = mx.recordio.unpack(rec.read_idx(int(k)))
        x = decode(img)
        if adaface:
            x = adaface_augment(rng, np.ascontiguousarray(x))
        if rng.rand() < 0.5:
            x = x[:, ::-1, :]
        x = ((x.astype(np.float32) / 255.0) - 0.5) / 0.5
    rate = len(keys) / (time.perf_counter() - t)
    print("%s%s: %.0f images/s" % (name, ", AdaFace 0.2 + flip" if adaface else "", rate))


def main():
    d = sys.argv[1]
    adaface = "--adaface" in sys.argv[2:]
    if adaface and cv2 is None:
        sys.exit("--adaface needs OpenCV (AdaFace's low-resolution step is cv2.resize)")
    run(d, lambda b: mx.image.imdecode(b).asnumpy(), "MXFaceDataset path (mx.image.imdecode), 1 thread", adaface)
    if cv2 is not None:
        run(d, lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1],
            "same path with cv2.imdecode (libjpeg-turbo), 1 thread", adaface)
    else:
        print("cv2 not installed: OpenCV row skipped")


if __name__ == "__main__":
    main()
