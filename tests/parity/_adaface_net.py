"""AdaFace's IR backbone (mk-minchul/AdaFace `net.py`, `Backbone` with `BasicBlockIR`) rewritten from its
architecture, with the same module tree so that state-dict keys match one to one:
`input_layer.{0,1,2}` (conv, BN, PReLU), `body.{k}.res_layer.{0..5}` (BN, conv, BN, PReLU, conv, BN),
`body.{k}.shortcut_layer.{0,1}` (conv, BN) where a block changes width, else `MaxPool2d(1, stride)`,
`output_layer.{0..4}` (BN2d, Dropout, Flatten, Linear, BatchNorm1d without affine). Generalized to any
widths (AdaFace: 64, 128, 256, 512); its forward returns the L2-normalized feature and its norm, as
AdaFace's does. A helper module (leading underscore: tests/run.sh does not run it)."""
import torch
from torch import nn

DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 14, 3], 100: [3, 13, 30, 3]}


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class BasicBlockIR(nn.Module):
    def __init__(self, cin, depth, stride):
        super().__init__()
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.BatchNorm2d(depth),
            nn.PReLU(depth), nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class Backbone(nn.Module):
    def __init__(self, num_layers, widths=(64, 128, 256, 512), input_hw=(112, 112), embedding=512):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                         nn.PReLU(widths[0]))
        blocks, cin = [], widths[0]
        for units, depth in zip(DEPTHS[num_layers], widths):
            for u in range(units):
                blocks.append(BasicBlockIR(cin, depth, 2 if u == 0 else 1))
                cin = depth
        self.body = nn.Sequential(*blocks)
        cells = (input_hw[0] // 16) * (input_hw[1] // 16)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Dropout(0.4), Flatten(),
                                          nn.Linear(cin * cells, embedding), nn.BatchNorm1d(embedding, affine=False))

    def forward(self, x):
        x = self.output_layer(self.body(self.input_layer(x)))
        norm = torch.norm(x, 2, 1, True)
        return torch.div(x, norm), norm


class AdaFaceHead(nn.Module):
    """AdaFace's head parameters and buffers as its `head.py` registers them (`kernel`, `t`,
    `batch_mean`, `batch_std`): they sit beside the backbone in the Lightning state dict."""

    def __init__(self, embedding, classes):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(embedding, classes))
        self.register_buffer('t', torch.zeros(1))
        self.register_buffer('batch_mean', torch.ones(1) * 20)
        self.register_buffer('batch_std', torch.ones(1) * 100)


class LightningTrainer(nn.Module):
    """The attributes of AdaFace's `train_val.Trainer` (a LightningModule) that hold state: `model` and
    `head`, hence the `model.` and `head.` prefixes of its checkpoints' state dict."""

    def __init__(self, backbone, classes):
        super().__init__()
        self.model = backbone
        self.head = AdaFaceHead(backbone.output_layer[3].out_features, classes)
