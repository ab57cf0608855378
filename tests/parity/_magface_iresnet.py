"""MagFace's IResNet (IrvingMeng/MagFace `models/iresnet.py`) rewritten from its architecture: insightface's
module names, every batch norm with eps 2e-5 (momentum 0.9 in torch's convention), Dropout2d(0.4) after
`bn2`, and a `features` BatchNorm1d whose weight is trained. `Builder` mirrors `models/magface.py`'s
SoftmaxBuilder (`features` backbone beside the MagLinear classifier `fc`), which MagFace's training
wraps so that checkpoints hold `features.module.` (distributed) or `module.features.` (DataParallel)
keys. A helper module (leading underscore: tests/run.sh does not run it)."""
import torch
from torch import nn

DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}
EPS = 2e-05


def bn(c):
    return nn.BatchNorm2d(c, eps=EPS, momentum=0.9)


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride, downsample):
        super().__init__()
        self.bn1, self.conv1 = bn(inplanes), nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2, self.prelu = bn(planes), nn.PReLU(planes)
        self.conv2, self.bn3 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), bn(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, num_layers, widths=(64, 128, 256, 512), input_hw=(112, 112), num_classes=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1, self.prelu = bn(widths[0]), nn.PReLU(widths[0])
        inplanes = widths[0]
        for i, (n, w) in enumerate(zip(DEPTHS[num_layers], widths)):
            blocks = []
            for b in range(n):
                down = nn.Sequential(nn.Conv2d(inplanes, w, 1, 2, bias=False), bn(w)) if b == 0 else None
                blocks.append(IBasicBlock(inplanes, w, 2 if b == 0 else 1, down))
                inplanes = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.bn2 = bn(inplanes)
        self.dropout = nn.Dropout2d(p=0.4, inplace=True)
        self.fc = nn.Linear(inplanes * (input_hw[0] // 16) * (input_hw[1] // 16), num_classes)
        self.features = nn.BatchNorm1d(num_classes, eps=EPS, momentum=0.9)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        return self.features(self.fc(x.view(x.size(0), -1)))


class MagLinear(nn.Module):
    """The classifier's parameter as MagFace registers it: `weight` [embedding, classes]."""

    def __init__(self, embedding, classes):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(embedding, classes))


class Builder(nn.Module):
    def __init__(self, features, classes, distributed):
        super().__init__()
        # The distributed trainer wraps the backbone alone (features.module.*); the single-node one wraps
        # the whole builder in DataParallel (module.features.*, module.fc.*).
        self.features = nn.DataParallel(features) if distributed else features
        self.fc = MagLinear(features.fc.out_features, classes)
