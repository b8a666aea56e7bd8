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

Then the same for full fine-tuning ("full_sgd", "full_adam"): every module
in modules_to_save (conv1, bn1, layer1..4, fc), every parameter trainable,
every batch norm in train mode (model.train()), weight decay 0.05 on conv and
Linear weights only (none on batch norms and biases, as torchvision's recipe)
— and eval-mode logits of the trained model for x's first 2 images.

Writes next to this script:
  bn_adapter/       the untrained adapter (PEFT's directory format + lorafit.json)
  full_adapter/     the same for full fine-tuning
  bn_expected.json  x (12 images, NCHW 28x28), labels; then for each optimizer
                    run ("sgd": momentum 0.9, lr 0.05 — 0.01 for full fine-tuning; "adam": lr 0.001), 3 steps
                    of batch 4 on images 0-3, 4-7, 8-11 with a constant learning
                    rate: the loss of every step and the eval logits after them;
  bn_expected.safetensors  per run R: R/grads/KEY, d loss/dW of every trainable
                    tensor at the first step (PEFT key without the prefix),
                    R/stats/KEY, the running statistics after the first forward,
                    and R/final/KEY, every adapter tensor after the 3 steps.
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


FULL = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
# Full fine-tuning at SGD's 0.05 diverges in three steps (the loss jumps),
# which amplifies float rounding past any tolerance: 0.01 trains.
SGD_LR = {"": 0.05, "full_": 0.01}


def main():
    torch.manual_seed(11)
    torch.set_num_threads(1)
    x = torch.randn(12, 3, 28, 28)
    labels = torch.randint(0, 10, (12,))
    out = {"source": "torch %s; see make_bn_fixture.py" % torch.__version__,
           "x": flat(x), "labels": [int(v) for v in labels], "runs": {}}
    tensors = {}
    make(out, tensors, x, labels, "bn_adapter", ["layer3.1.conv2"], ["layer4.1", "fc"], "", 0.0)
    make(out, tensors, x, labels, "full_adapter", None, FULL, "full_", 0.05)
    with open(os.path.join(HERE, "bn_expected.json"), "w") as f:
        json.dump(out, f)
    pr.save_safetensors(os.path.join(HERE, "bn_expected.safetensors"), tensors, {"format": "pt"})


def make(out, tensors, x, labels, dirname, targets_, m2s_, prefix, weight_decay):
    base_path = os.path.join(REPO, BASE_REL)
    net = pr.base_from_state_dict(torch.load(base_path, map_location="cpu"), "resnet18")
    acfg = {"peft_type": "LORA", "task_type": None, "r": 2, "lora_alpha": 4, "lora_dropout": 0.0,
            "target_modules": targets_ if targets_ is not None else [], "modules_to_save": m2s_, "bias": "none",
            "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}, "init_lora_weights": False,
            "base_model_name_or_path": BASE_REL, "inference_mode": True, "fan_in_fan_out": False,
            "layers_to_transform": None, "layers_pattern": None, "revision": None, "use_dora": False}
    targets, m2s = pr.apply_lora(net, acfg)
    lcfg = {"lorafit_version": 2,
            "base": {"arch": "resnet18", "weights": BASE_REL, "sha256": pr.sha256_file(base_path), "num_classes": 10},
            "num_classes": 10, "class_names": None, "head": None, "replace_fc": False,
            "preprocess": {"crop_size": 28, "resize_size": 28, "mean": pr.IMAGENET_MEAN, "std": pr.IMAGENET_STD},
            "dataset": "", "metrics": {}}
    out_dir = os.path.join(HERE, dirname)
    os.makedirs(out_dir, exist_ok=True)
    pr.save_safetensors(os.path.join(out_dir, pr.WEIGHTS_FILE), pr.adapter_state_dict(net, targets, m2s),
                        {"format": "pt"})
    for name, obj in ((pr.CONFIG_FILE, acfg), (pr.LORAFIT_FILE, lcfg)):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    for opt_name in ("sgd", "adam"):
        m = copy.deepcopy(net)
        trainable = []
        for name, p in m.named_parameters():
            own = ".lora_A." in name or ".lora_B." in name or any(name.startswith(s + ".") for s in m2s)
            p.requires_grad_(own)
            if own:
                trainable.append(p)
        m.eval()
        for name in m2s:  # the adapter's own batch norms train
            m.get_submodule(name).train()
        # Weight decay on conv and Linear weights only.
        decay = [p for n, p in m.named_parameters() if p.requires_grad and p.dim() > 1]
        rest = [p for n, p in m.named_parameters() if p.requires_grad and p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
        if opt_name == "sgd":
            opt = torch.optim.SGD(groups, lr=SGD_LR[prefix], momentum=0.9)
        else:
            opt = torch.optim.AdamW(groups, lr=0.001) if weight_decay else torch.optim.Adam(groups, lr=0.001)
        losses = []
        for step in range(3):
            xb, yb = x[4 * step:4 * step + 4], labels[4 * step:4 * step + 4]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(xb), yb)
            loss.backward()
            run = prefix + opt_name
            if step == 0:
                params = dict(m.named_parameters())
                for k in adapter_tensors(m, targets, m2s):
                    if k in params:
                        tensors["%s/grads/%s" % (run, k)] = params[k].grad.detach().clone()
                for k, v in adapter_tensors(m, targets, m2s).items():
                    if "running_" in k or "num_batches" in k:
                        tensors["%s/stats/%s" % (run, k)] = v.detach().clone()
            opt.step()
            losses.append(float(loss))
        m.eval()
        with torch.no_grad():
            eval_logits = flat(m(x[:2]))
        for k, v in adapter_tensors(m, targets, m2s).items():
            tensors["%s/final/%s" % (run, k)] = v.detach().clone()
        out["runs"][run] = {"losses": losses, "eval_logits": eval_logits}


if __name__ == "__main__":
    main()
