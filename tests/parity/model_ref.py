"""PyTorch references for the IResNet parity tests (tests/parity_model.rs). Usage: model_ref.py OUT_DIR.
Writes, from fixed seeds, in PyTorch layout (NCHW inputs, OIHW convs; the Rust side converts):
  model_block_f64.safetensors   one IBasicBlock with and without downsample: forward + backward (train)
  model_ir18_{f64,f32}.safetensors  IR-18 at batch 3: embeddings, every parameter gradient, running stats
                                   (weights only in the f64 file; the f32 run starts from them cast)
  model_optim_{sgd,adamw}.safetensors  three training steps on a small IResNet
Losses are sum(output * r) for a fixed random r."""
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _iresnet_torch import IResNet, iresnet, make_block  # noqa: E402

torch.use_deterministic_algorithms(True)


def state(prefix, module):
    return {f"{prefix}{k}": v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def grads(prefix, module):
    return {f"{prefix}{k}": p.grad.detach().clone().contiguous()
            for k, p in module.named_parameters() if p.grad is not None}


def block_fixture(out):
    torch.manual_seed(1)
    t = {}
    for tag, (cin, cout, stride, hw) in {"down": (8, 16, 2, 8), "plain": (16, 16, 1, 6)}.items():
        blk = make_block(cin, cout, stride).double()
        with torch.no_grad():  # non-trivial BN affine and PReLU values
            for m in blk.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
            blk.prelu.weight.uniform_(0.1, 0.4)
        t.update(state(f"{tag}.init.", blk))
        x = torch.randn(2, cin, hw, hw, dtype=torch.float64, requires_grad=True)
        y = blk.train()(x)
        r = torch.randn_like(y)
        (y * r).sum().backward()
        t[f"{tag}.x"] = x.detach().clone()
        t[f"{tag}.r"] = r
        t[f"{tag}.y"] = y.detach().clone()
        t[f"{tag}.grad_x"] = x.grad.detach().clone()
        t.update(grads(f"{tag}.grad.", blk))
        t.update(state(f"{tag}.after.", blk))
    save_file(t, os.path.join(out, "model_block_f64.safetensors"))


def buffers(prefix, module):
    return {f"{prefix}{k}": v.detach().clone() for k, v in module.named_buffers()}


def ir18_run(seed, dtype):
    """IR-18 from f64 weights, input and projection drawn from `seed`, run in `dtype` (train mode)."""
    torch.manual_seed(seed)
    net = iresnet("r18").double()
    x = torch.randn(3, 3, 112, 112, dtype=torch.float64)
    r = torch.randn(3, 512, dtype=torch.float64)
    t = state("init.", net) if dtype == torch.float64 else {}
    net = net.to(dtype)
    x, r = x.to(dtype), r.to(dtype)
    emb = net.train()(x)
    (emb * r).sum().backward()
    t["x"], t["r"], t["embedding"] = x, r, emb.detach().clone()
    t.update(grads("grad.", net))
    t.update(buffers("after.", net))
    return t


def ir18_fixtures(out):
    # Batch 3, not 2: with two samples the output BatchNorm1d maps each feature to about +-1 and its
    # backward cancels to O(eps), leaving gradients made of rounding noise.
    # The f32 gradients of the stem and layer1 are ill-conditioned for some inputs: PyTorch's own f32 run
    # then differs from its f64 run by ~2e-3 (PReLU kinks met by rounding), so no f32 implementation can
    # be held to 1e-4 there. We take the first seed where PyTorch f32 agrees with f64 to 3e-5 on every
    # gradient that is not a structural zero, and record the seed.
    for seed in range(16, 40):  # 4..15 were tried and fail the check; starting here keeps CI fast
        t64, t32 = ir18_run(seed, torch.float64), ir18_run(seed, torch.float32)
        worst = max(((t32[k].double() - t64[k]).norm() / t64[k].norm()).item()
                    for k in t32 if k.startswith("grad.") and not structurally_zero_grad(k[5:]))
        if worst <= 3e-5:
            break
    else:
        raise SystemExit("model_ref.py: no well-conditioned IR-18 input among seeds 16..39")
    # Only the f64 file stores the weights; the f32 run casts them.
    save_file(t64, os.path.join(out, "model_ir18_f64.safetensors"), metadata={"seed": str(seed)})
    save_file(t32, os.path.join(out, "model_ir18_f32.safetensors"),
              metadata={"seed": str(seed), "torch_f32_vs_f64": f"{worst:.3e}"})


def structurally_zero_grad(name):
    """Biases whose every path ends in a training-mode batch norm (after adds and padding-free 1x1 convs):
    the norm removes any per-channel shift, so their gradient is exactly zero and only rounding noise
    remains, which AdamW would amplify by 1/eps."""
    return name.endswith(("bn3.bias", "downsample.1.bias")) or name in ("bn2.bias", "fc.bias")


SMALL = dict(layers=[1, 1, 1, 1], widths=(8, 16, 32, 64), input_hw=(32, 32), num_features=32)


def optim_fixture(out, kind):
    torch.manual_seed(3)
    net = IResNet(**SMALL).double()
    t = state("init.", net)
    bn = [p for n, p in net.named_parameters() if p.requires_grad and p.dim() == 1 and "prelu" not in n
          and "fc" not in n]
    rest = [p for n, p in net.named_parameters() if p.requires_grad and not any(p is q for q in bn)]
    if kind == "sgd":  # AdaFace's grouping: no weight decay on batch-norm parameters
        opt = torch.optim.SGD([{"params": rest}, {"params": bn, "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                              weight_decay=5e-4)
        lrs = [0.1, 0.05, 0.025]
    else:
        opt = torch.optim.AdamW([p for n, p in net.named_parameters() if not structurally_zero_grad(n)], lr=1e-3,
                                weight_decay=0.05)
        lrs = [1e-3, 2e-3, 5e-4]
    net.train()
    for i, lr in enumerate(lrs):
        for g in opt.param_groups:
            g["lr"] = lr
        x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
        r = torch.randn(4, 32, dtype=torch.float64)
        t[f"step{i}.x"], t[f"step{i}.r"] = x, r
        opt.zero_grad()
        (net(x) * r).sum().backward()
        opt.step()
    t.update(state("after.", net))
    names = {id(p): n for n, p in net.named_parameters()}
    for p, s in opt.state.items():
        for k, v in s.items():
            if torch.is_tensor(v) and v.dim() > 0:
                t[f"optim.{names[id(p)]}.{k}"] = v.detach().clone()
    save_file(t, os.path.join(out, f"model_optim_{kind}.safetensors"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    block_fixture(out)
    ir18_fixtures(out)
    optim_fixture(out, "sgd")
    optim_fixture(out, "adamw")


if __name__ == "__main__":
    main()
