#!/usr/bin/python3
"""LoRA adapter fixtures for lorafit, made with PyTorch (no `peft` package:
the PEFT-equivalent layers, matching rules and safetensors I/O are in
peft_ref.py next to this script, written from PEFT's and safetensors'
specifications).

Run from anywhere with Debian's torch 1.13 / torchvision 0.14 (deterministic:
a rerun rewrites identical files):
    /usr/bin/python3 lora/testdata/make_fixtures.py

Base: resnet/testdata/resnet50_w4.pth, a ResNet-50 topology with stem width 4
(feature dim 8*4*4 = 128) and a 10-class fc, loaded into NarrowResNet. The
model: torchvision's ResNet with fc optionally replaced, a head attached as
`net.head` on top of fc's output, and LoRA targets wrapped as PEFT does,
y = base(x) + lora_B(lora_A(x)) * scaling (eval mode).

Every adapter directory below holds
  adapter_config.json        PEFT LoraConfig fields (init_lora_weights false)
  adapter_model.safetensors  fp32, PEFT keys base_model.model.<module>.lora_A.weight
                             / .lora_B.weight and base_model.model.<module>.<param>
                             for modules_to_save; __metadata__ {"format": "pt"}
  lorafit.json               base (arch, weights path, sha256 of resnet50_w4.pth,
                             num_classes 10), num_classes, class_names, head,
                             replace_fc, image_size 28, ImageNet mean/std
  expected.json              what PyTorch computes in eval mode:
      x, x_shape       a seeded randn 2x3x28x28 input (NCHW)
      r                seeded randn shaped like the logits
      logits           the adapted model's logits for x, shape logits_shape
      grad_x           d sum(logits*r) / dx
      grads            d sum(logits*r) / dW for every adapter tensor (all LoRA
                       A/B and modules_to_save params), PyTorch layout, named by
                       the PEFT key without "base_model.model."
      targets          [[module, r, alpha, scaling], ...] in named_modules order
      modules_to_save  the module names saved whole
      delta_weights    scaling*B.A (PEFT's get_delta_weight, base weight layout)
                       for a few targets: what `merge` adds to the base weight
      png_logits       logits for cmd/lorafit/testdata/*.png (gray->RGB,
                       to_tensor, ImageNet normalize, no resize)
      lora_effect      max|logits - logits with every lora_B zeroed| / max|logits|

Adapters (LoRA A and B both random and nonzero: PEFT's init_lora_weights=False,
torch's default layer init, B then multiplied by b_scale):
  case2_like      target_modules ".*\\.2\\.conv3" (regex), r=4, alpha=8,
                  modules_to_save ["fc", "head"], head [16, 8], 10 classes; fc
                  is the base fc perturbed (as if trained), so it must be read
                  from the adapter.
  strided_rslora  target_modules ["layer2.0.conv2", "downsample.0", "fc"] (list:
                  suffix match -> layer2.0.conv2 (3x3, stride 2), every
                  layerN.0.downsample.0 (1x1, stride 1 or 2), fc (Linear)),
                  r=4, alpha=6, use_rslora, rank_pattern {"layer2\\.0\\.conv2": 2},
                  alpha_pattern {"fc": 3}, modules_to_save [], no head.
  case4_like      target_modules ["layer4.2.conv3"], r=2, alpha=2, replace_fc
                  (fc = Linear(128 -> 7)), modules_to_save ["fc"], no head,
                  7 classes with class names.

Before writing expected.json the script asserts: re-reading each safetensors
file gives back exactly the tensors written (bitwise) and its metadata;
rebuilding the model from the directory alone (peft_ref.load_adapted) gives
bitwise the same logits; the merged plain model (torchvision keys + head.*)
gives the same logits within 1e-5; the LoRA delta moves the logits by > 1%.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the testdata dirs

import json  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peft_ref as pr  # noqa: E402

BASE_REL = "resnet/testdata/resnet50_w4.pth"
BASE = os.path.join(pr.REPO, BASE_REL)
PNG_DIR = os.path.join(pr.REPO, "cmd", "lorafit", "testdata")


def peft_config(**kw):
    cfg = {"peft_type": "LORA", "task_type": None, "r": 8, "lora_alpha": 8, "lora_dropout": 0.0,
           "target_modules": None, "modules_to_save": None, "bias": "none", "use_rslora": False,
           "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": False,
           "base_model_name_or_path": BASE_REL, "inference_mode": True, "fan_in_fan_out": False,
           "layers_to_transform": None, "layers_pattern": None, "revision": None, "use_dora": False}
    for k in kw:
        assert k in cfg, k
    cfg.update(kw)
    return cfg


def lorafit_config(sha, **kw):
    cfg = {"lorafit_version": 1,
           "base": {"arch": "resnet50", "weights": BASE_REL, "sha256": sha, "num_classes": 10},
           "num_classes": 10, "class_names": None, "head": None, "replace_fc": False, "image_size": 28,
           "mean": pr.IMAGENET_MEAN, "std": pr.IMAGENET_STD, "dataset": "", "metrics": {}}
    for k in kw:
        assert k in cfg, k
    cfg.update(kw)
    return cfg


CASES = [
    dict(name="case2_like", seed=2, b_scale=1.0, perturb_fc=0.05,
         peft=dict(target_modules=r".*\.2\.conv3", r=4, lora_alpha=8, modules_to_save=["fc", "head"]),
         lorafit=dict(num_classes=10, class_names=[str(i) for i in range(10)], head=[16, 8]),
         delta=["layer1.2.conv3", "layer2.2.conv3"]),
    dict(name="strided_rslora", seed=3, b_scale=1.0, perturb_fc=0.0,
         peft=dict(target_modules=["layer2.0.conv2", "downsample.0", "fc"], r=4, lora_alpha=6, use_rslora=True,
                   rank_pattern={r"layer2\.0\.conv2": 2}, alpha_pattern={"fc": 3}, modules_to_save=[]),
         lorafit=dict(num_classes=10),
         delta=["layer2.0.conv2", "layer1.0.downsample.0", "layer2.0.downsample.0", "fc"]),
    dict(name="case4_like", seed=4, b_scale=4.0, perturb_fc=0.0,
         peft=dict(target_modules=["layer4.2.conv3"], r=2, lora_alpha=2, modules_to_save=["fc"]),
         lorafit=dict(num_classes=7, replace_fc=True,
                      class_names=["zero", "one", "two", "three", "four", "five", "six"]),
         delta=["layer4.2.conv3"]),
]


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def base_net():
    return pr.base_from_state_dict(torch.load(BASE, map_location="cpu"), "resnet50")


def write_json(path, obj, **kw):
    with open(path, "w") as f:
        json.dump(obj, f, **kw)
        f.write("\n")


def make(case, sha, pngs):
    name = case["name"]
    out_dir = os.path.join(HERE, name)
    os.makedirs(out_dir, exist_ok=True)
    acfg = peft_config(**case["peft"])
    lcfg = lorafit_config(sha, **case["lorafit"])
    torch.manual_seed(case["seed"])

    # Build: the new modules and LoRA layers keep torch's default init.
    net = base_net()
    created = pr.apply_lorafit(net, lcfg)
    targets, m2s = pr.apply_lora(net, acfg)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, pr.LoraLayer):
                m.lora_B.weight.mul_(case["b_scale"])
        if case["perturb_fc"] and "fc" in m2s and "fc" not in created:
            net.fc.weight.add_(case["perturb_fc"] * torch.randn_like(net.fc.weight))
            net.fc.bias.add_(case["perturb_fc"] * torch.randn_like(net.fc.bias))
    net.eval()
    tensors = pr.adapter_state_dict(net, targets, m2s)
    for k, t in tensors.items():
        assert t.dtype == torch.float32 and t.abs().max() > 0, k

    write_json(os.path.join(out_dir, pr.CONFIG_FILE), acfg, indent=2)
    write_json(os.path.join(out_dir, pr.LORAFIT_FILE), lcfg, indent=2)
    st_path = os.path.join(out_dir, pr.WEIGHTS_FILE)
    pr.save_safetensors(st_path, tensors, {"format": "pt"})

    # The file gives back exactly what was written.
    back, meta, dtypes = pr.read_safetensors(st_path)
    assert meta == {"format": "pt"}, meta
    assert set(back) == set(tensors), sorted(set(back) ^ set(tensors))
    for k, t in tensors.items():
        assert dtypes[k] == "F32" and back[k].dtype == t.dtype and back[k].shape == t.shape, k
        assert torch.equal(back[k], t), k

    # x, r, logits, gradients.
    x = torch.randn(2, 3, 28, 28, requires_grad=True)
    logits = net(x)
    r = torch.randn_like(logits)
    (logits * r).sum().backward()
    params = dict(net.named_parameters())
    grads = {}
    for key in sorted(tensors):
        mod = key[len(pr.PREFIX):]
        grads[mod] = flat(params[mod].grad)

    with torch.no_grad():
        xd = x.detach()
        # The directory alone rebuilds the same model.
        again, info = pr.load_adapted(base_net(), out_dir)
        assert info["targets"] == targets and info["m2s"] == m2s, (info["targets"], info["m2s"])
        assert torch.equal(again(xd), logits), "rebuilt from the directory: logits differ"
        # Merging changes nothing.
        plain, missing, unexpected = pr.plain_model(base_net(), lcfg, pr.merged_state_dict(net))
        assert not missing and not unexpected, (missing, unexpected)
        assert pr.rel_diff(plain(xd), logits) < 1e-5, pr.rel_diff(plain(xd), logits)
        # The LoRA delta is well above any parity tolerance.
        effect = pr.rel_diff(pr.zero_lora_copy(net)(xd), logits)
        assert effect > 1e-2, "LoRA effect only %.2e" % effect
        png_logits = {}
        for p in pngs:
            png_logits[os.path.basename(p)] = flat(net(pr.load_image(p, 28).unsqueeze(0))[0])
        layers = {n: m for n, m in net.named_modules() if isinstance(m, pr.LoraLayer)}
        deltas = {n + ".weight": {"shape": list(layers[n].base_layer.weight.shape),
                                  "values": flat(layers[n].delta_weight())} for n in case["delta"]}

    expected = {
        "source": "torch %s, NarrowResNet(Bottleneck, [3, 4, 6, 3], width=4) from %s + lorafit/peft_ref, eval mode"
                  % (torch.__version__, BASE_REL),
        "x": flat(x), "x_shape": list(x.shape),
        "r": flat(r),
        "logits": flat(logits), "logits_shape": list(logits.shape),
        "grad_x": flat(x.grad),
        "grads": grads,
        "targets": [list(t) for t in targets],
        "modules_to_save": m2s,
        "delta_weights": deltas,
        "png_logits": png_logits,
        "lora_effect": effect,
    }
    write_json(os.path.join(out_dir, "expected.json"), expected)
    print("%s: %d targets %s, modules_to_save %s, %d adapter tensors, lora_effect %.3f"
          % (name, len(targets), [t[0] for t in targets], m2s, len(tensors), effect))


def main():
    torch.set_num_threads(1)
    sha = pr.sha256_file(BASE)
    pngs = sorted(os.path.join(PNG_DIR, f) for f in os.listdir(PNG_DIR) if f.endswith(".png"))
    assert len(pngs) == 3, pngs
    for case in CASES:
        make(case, sha, pngs)
    total = 0
    for root, _, files in os.walk(HERE):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print("lora/testdata: %d bytes in all" % total)
    assert total < 1_500_000, total


if __name__ == "__main__":
    main()
