"""Released-model layouts written by PyTorch, for the import tests (tests/import_parity.rs,
bin/tests/import_export_cli.rs). Usage: import_ref.py OUT_DIR. Writes OUT_DIR/import/:
  images/face{0,1,2}.png, images/list.txt   three 112x112 RGB images (PNG: exact pixels on both sides)
  insightface_r18.pth         insightface iresnet state dict, torch.save's zip format (widths 16..128)
  insightface_r18_legacy.pth  the same, legacy (non-zip) format
  insightface_r18.onnx        the same exported as arcface_torch's torch2onnx.py does (opset 11, eval
                              mode: batch norms folded into the convolutions; dynamic batch 'None')
  insightface_r34_half.pth    IR-34 (widths 8..64) saved in float16
  insightface_r50.pth         IR-50 (widths 8..64)
  adaface_ir{18,50,101}.ckpt  AdaFace net.py backbones inside a PyTorch Lightning 1.8 checkpoint (state_dict
                              with model./head. keys, optimizer state, hyper-parameters as Lightning's
                              AttributeDict, loops and callbacks)
  magface_r18.pth             MagFace checkpoint of its distributed trainer (features.module.*, fc.weight)
  magface_r34_dp.pth          MagFace checkpoint of its DataParallel trainer (module.features.*), legacy format
  bad_shape.pth               insightface_r18 with layer2.0.conv1.weight of a wrong shape
  other_arch.onnx             a MobileFaceNet-like graph (depthwise convolution, ReLU, global pooling)
  reference.safetensors       each model's embeddings of the three images [3, 512], computed
                              with its project's preprocessing (insightface RGB (x/255-0.5)/0.5; AdaFace
                              BGR, same; MagFace BGR x/255), before any L2 normalization
Weights are random but away from their initial values, with activations of order one."""
import collections
import os
import sys
import types
import warnings

import cv2
import numpy as np
import onnx
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _adaface_net as ada  # noqa: E402
import _magface_iresnet as mag  # noqa: E402
from _iresnet_torch import iresnet  # noqa: E402

torch.manual_seed(0)
# The TorchScript exporter is what arcface_torch's torch2onnx.py uses; its deprecation notice is noise here.
warnings.filterwarnings("ignore", category=DeprecationWarning)
W16, W8 = (16, 32, 64, 128), (8, 16, 32, 64)


def randomize(net, gen, fixed=()):
    """Conv N(0, (0.5/sqrt(fan_in))^2), Linear N(0, 1/in), BN affine and statistics around 1 and 0, PReLU
    0.1..0.4; parameters named in `fixed` keep their value (insightface's features.weight)."""
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, torch.nn.Conv2d):
                fan = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.5 / fan ** 0.5)
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                c = m.num_features
                if m.affine and f"{name}.weight" not in fixed:
                    m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                if m.affine:
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(1234)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.copy_(0.1 + 0.3 * torch.rand(m.weight.shape, generator=gen))
    return net.eval()


def images():
    """Three smooth, textured 112x112 RGB images from a fixed seed."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:112, 0:112] / 112.0
    out = []
    for i in range(3):
        chans = []
        for c in range(3):
            f = rng.uniform(1, 6, size=2)
            v = 127 + 80 * np.sin(2 * np.pi * (f[0] * xx + f[1] * yy) + rng.uniform(0, 6)) + rng.normal(0, 12, (112, 112))
            chans.append(v)
        out.append(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8))
    return np.stack(out)


def nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().contiguous()


def insightface_input(rgb):
    return nchw(((rgb / 255.0) - 0.5) / 0.5)


def adaface_input(rgb):
    # AdaFace's inference.py to_input: BGR, ((x / 255.) - 0.5) / 0.5.
    return nchw(((rgb[..., ::-1] / 255.0) - 0.5) / 0.5)


def magface_input(rgb):
    # MagFace's gen_feat.py: cv2.imread (BGR), ToTensor (x / 255), Normalize(mean 0, std 1).
    return nchw(rgb[..., ::-1] / 255.0)


def lightning_attribute_dict():
    """Lightning's AttributeDict class under its real module name, so the checkpoint pickles the global
    `pytorch_lightning.utilities.parsing.AttributeDict` as Lightning's does (without installing it)."""
    names = ["pytorch_lightning", "pytorch_lightning.utilities", "pytorch_lightning.utilities.parsing"]
    for n in names:
        sys.modules.setdefault(n, types.ModuleType(n))
    cls = type("AttributeDict", (dict,), {"__module__": names[-1]})
    sys.modules[names[-1]].AttributeDict = cls
    return cls


def lightning_checkpoint(trainer, arch):
    """The dict PyTorch Lightning 1.8's `dump_checkpoint` saves (the keys and their kinds of value)."""
    opt = torch.optim.SGD(trainer.parameters(), lr=0.0, momentum=0.9)
    x = torch.randn(2, 3, 112, 112)
    (trainer.model(x)[0].sum() + trainer.head.kernel.sum()).backward()
    opt.step()  # lr 0: momentum buffers exist, weights are unchanged
    hp = lightning_attribute_dict()(arch=arch, head="adaface", m=0.4, h=0.333, s=64.0, t_alpha=0.01, lr=0.1,
                                    lr_milestones="12,20,24", batch_size=512)
    return {
        "epoch": 25,
        "global_step": 12345,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": trainer.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 26, "completed": 25}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max'}": {"best_model_score": torch.tensor(0.97)}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [{"milestones": collections.Counter({12: 1, 20: 1, 24: 1}), "gamma": 0.1, "last_epoch": 25}],
        "hparams_name": "kwargs",
        "hyper_parameters": hp,
    }


def export_onnx_like_torch2onnx(net, path):
    """arcface_torch's torch2onnx.py: legacy exporter, opset 11, input 'data', batch dimension 'None'."""
    x = torch.randn(1, 3, 112, 112)
    torch.onnx.export(net, x, path, input_names=["data"], keep_initializers_as_inputs=False, opset_version=11,
                      dynamo=False)
    m = onnx.load(path)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "None"
    onnx.save(m, path)


class OtherArch(torch.nn.Module):
    """Not an IResNet: MobileFaceNet-style depthwise convolution, ReLU, global average pooling."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.dw = torch.nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False)
        self.fc = torch.nn.Linear(16, 128)

    def forward(self, x):
        x = self.dw(self.stem(x)).mean((2, 3))
        return self.fc(x)


def main(out):
    d = os.path.join(out, "import")
    os.makedirs(os.path.join(d, "images"), exist_ok=True)
    rgb = images()
    for i, im in enumerate(rgb):
        cv2.imwrite(os.path.join(d, "images", f"face{i}.png"), im[..., ::-1])
    with open(os.path.join(d, "images", "list.txt"), "w") as f:
        f.write("".join(f"face{i}.png {i}\n" for i in range(len(rgb))))
    ref = {}
    gen = torch.Generator().manual_seed(1)

    def emb(name, net, x):
        with torch.no_grad():
            y = net(x)
        if isinstance(y, tuple):  # AdaFace: (normalized, norm) -> the feature itself
            y = y[0] * y[1]
        ref[name] = y.float().contiguous()

    fixed = {"features.weight"}
    r18 = randomize(iresnet("r18", widths=W16), gen, fixed)
    torch.save(r18.state_dict(), os.path.join(d, "insightface_r18.pth"))
    torch.save(r18.state_dict(), os.path.join(d, "insightface_r18_legacy.pth"), _use_new_zipfile_serialization=False)
    export_onnx_like_torch2onnx(r18, os.path.join(d, "insightface_r18.onnx"))
    emb("insightface_r18", r18, insightface_input(rgb))
    bad = r18.state_dict()
    bad["layer2.0.conv1.weight"] = torch.zeros(32, 16, 1, 3)
    torch.save(bad, os.path.join(d, "bad_shape.pth"))

    r34 = randomize(iresnet("r34", widths=W8), gen, fixed).half()
    torch.save(r34.state_dict(), os.path.join(d, "insightface_r34_half.pth"))
    emb("insightface_r34_half", r34.float(), insightface_input(rgb))
    r50 = randomize(iresnet("r50", widths=W8), gen, fixed)
    torch.save(r50.state_dict(), os.path.join(d, "insightface_r50.pth"))
    emb("insightface_r50", r50, insightface_input(rgb))

    # AdaFace IR-101 is net.py's Backbone(num_layers=100); widths 4, 8, 8, 16 give two same-width stages.
    for name, layers, widths in [("adaface_ir18", 18, W16), ("adaface_ir50", 50, W8), ("adaface_ir101", 100, (4, 8, 8, 16))]:
        net = randomize(ada.Backbone(layers, widths), gen)
        trainer = ada.LightningTrainer(net, classes=10)
        torch.save(lightning_checkpoint(trainer, f"ir_{layers}"), os.path.join(d, f"{name}.ckpt"))
        emb(name, net, adaface_input(rgb))

    for name, layers, widths, distributed, legacy in [("magface_r18", 18, W16, True, False),
                                                      ("magface_r34_dp", 34, W8, False, True)]:
        net = randomize(mag.IResNet(layers, widths), gen)
        with torch.no_grad():  # small variances where eps matters: 2e-5 against insightface's 1e-5
            net.features.running_var[:64].uniform_(1e-5, 1e-4, generator=gen)
        builder = mag.Builder(net, classes=10, distributed=distributed)
        saved = builder if distributed else torch.nn.DataParallel(builder)
        opt = torch.optim.SGD(saved.parameters(), lr=0.1, momentum=0.9)
        ckpt = {"epoch": 25, "arch": f"iresnet{layers}", "state_dict": saved.state_dict(), "optimizer": opt.state_dict()}
        torch.save(ckpt, os.path.join(d, f"{name}.pth"), _use_new_zipfile_serialization=not legacy)
        emb(name, net, magface_input(rgb))

    other = OtherArch().eval()
    torch.onnx.export(other, torch.randn(1, 3, 112, 112), os.path.join(d, "other_arch.onnx"), input_names=["data"],
                      opset_version=11, dynamo=False)
    save_file(ref, os.path.join(d, "reference.safetensors"))
    print(f"import_ref: {len(ref)} models -> {d}")


if __name__ == "__main__":
    main(sys.argv[1])
