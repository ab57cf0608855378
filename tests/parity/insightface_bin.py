"""Writes .bin verification sets as insightface's tools do (pickle of (bins, issame_list)) in several
variants for datasets/tests/bin_parity.rs: protocols 2, 4 and 5, images as bytes or as numpy uint8 arrays
(as some packs hold cv2.imencode output).

Usage: insightface_bin.py OUTDIR   (writes OUTDIR/insightface_bin/)
Besides the .bin files: images.txt, one line per image with its bytes in hex, and issame.txt (0/1 per pair).
"""
import os
import pickle
import sys

import numpy as np


def main():
    out = os.path.join(sys.argv[1], "insightface_bin")
    os.makedirs(out, exist_ok=True)
    rng = np.random.RandomState(3)
    # Stand-ins for encoded images: random byte strings of varied length (the reader does not decode).
    images = [rng.randint(0, 256, size=n, dtype=np.uint8).tobytes() for n in (5, 300, 70000, 1, 255, 256)]
    issame = [True, False, True]
    for proto in (2, 4, 5):
        with open(os.path.join(out, "bytes_p%d.bin" % proto), "wb") as f:
            pickle.dump((images, issame), f, protocol=proto)
        arrays = [np.frombuffer(b, dtype=np.uint8).copy() for b in images]
        with open(os.path.join(out, "numpy_p%d.bin" % proto), "wb") as f:
            pickle.dump((arrays, issame), f, protocol=proto)
    with open(os.path.join(out, "images.txt"), "w") as f:
        f.write("\n".join(b.hex() for b in images) + "\n")
    with open(os.path.join(out, "issame.txt"), "w") as f:
        f.write("\n".join(str(int(s)) for s in issame) + "\n")
    print("insightface_bin: 6 variants -> %s" % out)


if __name__ == "__main__":
    main()
