#!/usr/bin/python3
"""Training parity fixture for batch norms inside modules_to_save, made by
PyTorch itself (Debian's torch 1.13; deterministic, a rerun rewrites the
same files):

    /usr/bin/python3 train/testdata/make_bn_fixture.py

Base: resnet/testdata/resnet18_w4.pth (ResNet-18 topology, stem width 4, 10
classes), frozen and in eval mode. Adapter: LoRA on layer3.1.conv2 (r=2,
alpha=4, A and B random: PEFT's init_lora_weights=False) and
modules_to_save ["layer4.1", "fc"] — layer4.1 holds two batch norms, which
train as PyTorch's model.train() runs them: batch statistics, running
mean/var updated (momentum 0.1, unbiased variance), num_batches_tracked
counted. The rest of the network stays in eval mode (lorafit never updates
a frozen base's statistics).

Writes next to this script:
  bn_adapter/       the untrained adapter (PEFT's directory format + lorafit.json)
  bn_expected.json  x (12 images, NCHW 28x28), labels; then for each optimizer
                    run ("sgd": momentum 0.9, lr 0.05; "adam": lr 0.001), 3 steps
                    of batch 4 on images 0-3, 4-7, 8-11 with a constant learning
                    rate: the loss of every step, d loss/dW of every trainable
                    tensor at the first step (PEFT key without the prefix), the
                    running statistics after the first forward, and every adapter
                    tensor after the 3 steps.
"""
import sys

sys.dont_write_bytecode = True

import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "lora", "testdata"))
import peft_ref as pr  # noqa: E402

BASE_REL = "resnet/testdata/resnet18_w4.pth"
PREFIX = pr.PREFIX


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def adapter_tensors(net, targets, m2s):
    return {k[len(PREFIX):]: v for k, v in pr.adapter_state_dict(net, targets, m2s).items()}


def main():
    torch.manual_seed(11)
    torch.set_num_threads(1)
    base_path = os.path.join(REPO, BASE_REL)
    net = pr.base_from_state_dict(torch.load(base_path, map_location="cpu"), "resnet18")
    acfg = {"peft_type": "LORA", "task_type": None, "r": 2, "lora_alpha": 4, "lora_dropout": 0.0,
            "target_modules": ["layer3.1.conv2"], "modules_to_save": ["layer4.1", "fc"], "bias": "none",
            "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": False,
            "base_model_name_or_path": BASE_REL, "inference_mode": True, "fan_in_fan_out": False,
            "layers_to_transform": None, "layers_pattern": None, "revision": None, "use_dora": False}
    targets, m2s = pr.apply_lora(net, acfg)
    lcfg = {"lorafit_version": 2,
            "base": {"arch": "resnet18", "weights": BASE_REL, "sha256": pr.sha256_file(base_path), "num_classes": 10},
            "num_classes": 10, "class_names": None, "head": None, "replace_fc": False,
            "preprocess": {"crop_size": 28, "resize_size": 28, "mean": pr.IMAGENET_MEAN, "std": pr.IMAGENET_STD},
            "dataset": "", "metrics": {}}
    out_dir = os.path.join(HERE, "bn_adapter")
    os.makedirs(out_dir, exist_ok=True)
    pr.save_safetensors(os.path.join(out_dir, pr.WEIGHTS_FILE), pr.adapter_state_dict(net, targets, m2s),
                        {"format": "pt"})
    for name, obj in ((pr.CONFIG_FILE, acfg), (pr.LORAFIT_FILE, lcfg)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    x = torch.randn(12, 3, 28, 28)
    labels = torch.randint(0, 10, (12,))
    out = {"source": "torch %s; see make_bn_fixture.py" % torch.__version__,
           "x": flat(x), "labels": [int(v) for v in labels], "runs": {}}
    for opt_name in ("sgd", "adam"):
        m = copy.deepcopy(net)
        trainable = []
        for name, p in m.named_parameters():
            own = ".lora_A." in name or ".lora_B." in name or any(name.startswith(s + ".") for s in m2s)
            p.requires_grad_(own)
            if own:
                trainable.append(p)
        m.eval()
        m.layer4[1].train()  # the adapter's own batch norms train
        if opt_name == "sgd":
            opt = torch.optim.SGD(trainable, lr=0.05, momentum=0.9)
        else:
            opt = torch.optim.Adam(trainable, lr=0.001)
        losses, grads, stats = [], {}, {}
        for step in range(3):
            xb, yb = x[4 * step:4 * step + 4], labels[4 * step:4 * step + 4]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(xb), yb)
            loss.backward()
            if step == 0:
                params = dict(m.named_parameters())
                grads = {k: flat(params[k].grad) for k in adapter_tensors(m, targets, m2s) if k in params}
                stats = {k: flat(v) for k, v in adapter_tensors(m, targets, m2s).items()
                         if "running_" in k or "num_batches" in k}
            opt.step()
            losses.append(float(loss))
        out["runs"][opt_name] = {"losses": losses, "grads": grads, "stats_after_first": stats,
                                 "final": {k: flat(v) for k, v in adapter_tensors(m, targets, m2s).items()}}
    with open(os.path.join(HERE, "bn_expected.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
