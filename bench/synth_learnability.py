"""Learnability check of the generated demo set, independent of the engine.

Trains a tiny CNN with a CosFace head on a raw dump written by
`cargo run --release -p datasets --example synth_dump -- DIR IDS IMAGES HELDOUT PAIRS SIZE SEED`
for a fixed number of epochs on the CPU (images seen, not wall time, so a busy machine does not
change the outcome; the elapsed time is printed with each epoch), then reports verification accuracy on the dump's pairs
(identities held out of training): best threshold on all pairs and insightface-style 10-fold.

usage: python bench/synth_learnability.py DIR [EPOCHS] [THREADS] [adamw|sgd]
"""
import sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(d):
    n, p, s, classes = map(int, open(f"{d}/meta.txt").read().split())
    x = np.fromfile(f"{d}/train_rgb.u8", np.uint8).reshape(n, s, s, 3)
    y = np.fromfile(f"{d}/train_label.u32", np.uint32).astype(np.int64)
    px = np.fromfile(f"{d}/pair_rgb.u8", np.uint8).reshape(p, 2, s, s, 3)
    same = np.fromfile(f"{d}/pair_same.u8", np.uint8).astype(bool)
    return x, y, px, same, classes


def to_tensor(a):
    return (torch.from_numpy(a).float().permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5


def block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.PReLU(cout))


class Net(nn.Module):
    def __init__(self, size, dim=128):
        super().__init__()
        self.features = nn.Sequential(
            block(3, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1),
            block(64, 128, 2), block(128, 128, 1), block(128, 128, 2))
        side = (size + 15) // 16
        self.fc = nn.Linear(128 * side * side, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        return self.bn(self.fc(self.features(x).flatten(1)))


def best_threshold(scores, same):
    order = np.argsort(scores)
    s, t = scores[order], same[order]
    same_above = t.sum() - np.cumsum(t)
    diff_below = np.cumsum(~t)
    acc = np.concatenate([[t.sum()], same_above + diff_below]) / len(t)
    k = int(np.argmax(acc))
    thr = -np.inf if k == 0 else s[k - 1] + 1e-9
    return acc[k], thr


def ten_fold(scores, same):
    folds = np.array_split(np.arange(len(scores)), 10)
    accs = []
    for f in folds:
        rest = np.setdiff1d(np.arange(len(scores)), f)
        _, thr = best_threshold(scores[rest], same[rest])
        accs.append(((scores[f] >= thr) == same[f]).mean())
    return float(np.mean(accs))


@torch.no_grad()
def verify(net, px, same):
    net.eval()
    p = px.shape[0]
    imgs = to_tensor(px.reshape(-1, *px.shape[2:]))
    embs = []
    for i in range(0, len(imgs), 256):
        b = imgs[i:i + 256]
        embs.append(net(b) + net(torch.flip(b, dims=[3])))
    e = F.normalize(torch.cat(embs), dim=1).reshape(p, 2, -1)
    scores = (e[:, 0] * e[:, 1]).sum(1).numpy()
    net.train()
    return best_threshold(scores, same)[0], ten_fold(scores, same)


def main():
    d = sys.argv[1]
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    torch.manual_seed(0)
    x, y, px, same, classes = load(d)
    size = x.shape[1]
    xt, yt = to_tensor(x), torch.from_numpy(y)
    net = Net(size)
    print(f"untrained: best-threshold/10-fold {verify(net, px, same)}")
    w = nn.Parameter(torch.randn(classes, 128) * 0.01)
    opt_name = sys.argv[4] if len(sys.argv) > 4 else "adamw"
    base_lr = 0.1 if opt_name == "sgd" else 3e-3
    params = list(net.parameters()) + [w]
    opt = (torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=5e-4) if opt_name == "sgd"
           else torch.optim.AdamW(params, lr=base_lr, weight_decay=5e-4))
    s_scale, margin, bs = 30.0, 0.35, 128
    start, step = time.time(), 0
    total = epochs * (len(xt) // bs)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(xt))
        for i in range(0, len(perm) - bs + 1, bs):
            idx = perm[i:i + bs]
            b = xt[idx]
            flip = torch.rand(bs) < 0.5
            b[flip] = torch.flip(b[flip], dims=[3])
            cos = F.linear(F.normalize(net(b)), F.normalize(w))
            onehot = F.one_hot(yt[idx], classes).float()
            loss = F.cross_entropy(s_scale * (cos - margin * onehot), yt[idx])
            frac = step / total
            for g in opt.param_groups:
                g["lr"] = base_lr * 0.5 * (1 + np.cos(np.pi * frac))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        el = time.time() - start
        acc = verify(net, px, same)
        print(f"epoch {epoch} step {step} t={el:.0f}s loss={loss.item():.3f} {step * bs / el:.0f} img/s pairs best/10-fold={acc[0]:.4f}/{acc[1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
