"""insightface's IResNet (recognition/arcface_torch/backbones/iresnet.py) rewritten from its architecture,
with the same module names so state dicts match one to one, generalized to any widths, input size and
embedding size (insightface: widths 64..512, 112x112, 512). Imported by model_ref.py and the export check;
the leading underscore keeps tests/run.sh from running it as a fixture script."""
import torch
from torch import nn


class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-05)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


def make_block(inplanes, planes, stride):
    down = None
    if stride != 1 or inplanes != planes:
        down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-05))
    return IBasicBlock(inplanes, planes, stride, down)


class IResNet(nn.Module):
    def __init__(self, layers, widths=(64, 128, 256, 512), input_hw=(112, 112), num_features=512, dropout=0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-05)
        self.prelu = nn.PReLU(widths[0])
        inplanes = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = [make_block(inplanes, w, 2)] + [make_block(w, w, 1) for _ in range(1, n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = w
        self.bn2 = nn.BatchNorm2d(widths[3], eps=1e-05)
        self.dropout = nn.Dropout(p=dropout, inplace=True)
        self.fc = nn.Linear(widths[3] * (input_hw[0] // 16) * (input_hw[1] // 16), num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        # As insightface's iresnet: fc and features outside autocast, in the weights' own type.
        with torch.autocast(x.device.type, enabled=False):
            return self.features(self.fc(x.to(self.fc.weight.dtype)))


def iresnet(name, **kw):
    layers = {"r18": [2, 2, 2, 2], "r34": [3, 4, 6, 3], "r50": [3, 4, 14, 3], "r100": [3, 13, 30, 3],
              "r200": [6, 26, 60, 6]}[name]
    return IResNet(layers, **kw)
