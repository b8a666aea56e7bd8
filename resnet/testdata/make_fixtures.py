#!/usr/bin/python3
"""Parity fixtures for lorafit's Go ResNet, made by PyTorch itself.

Run from the repository root with Debian's torch (see README):
    /usr/bin/python3 resnet/testdata/make_fixtures.py

For ResNet-50 and ResNet-18 topologies with the stem width shrunk from 64 to
4, and a ResNeXt (grouped 3x3 convs, width 8, 2 groups of 4 channels, depth
[1,2,1,1]) (files stay small; every code path of the full model is still
exercised) it writes, next to this script:
  <name>.pth   the state_dict, saved by torch.save (zip format, as torchvision's
               official weights are)
  <name>.json  inputs and what torchvision computes in eval mode: logits for a
               28x28 batch (layer4 runs on 1x1 maps there) and a 64x64 batch,
               and the gradients of sum(logits * R) w.r.t. the 28x28 input and
               a few weights.
  torchvision_archs.json  for every architecture of torchvision's resnet.py
               (resnet18..152, resnext*, wide_resnet*) as torchvision builds
               them: every state_dict key with its shape, in order, the
               parameter count and the modules with their parameter counts.

Arguments name what to make (default: all): archs resnet50_w4 resnet18_w4
resnext_w8. Remaking resnet50_w4 changes the sha256 the LoRA fixtures bind to.
"""
import sys
import json
import os

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

HERE = os.path.dirname(os.path.abspath(__file__))


class NarrowResNet(ResNet):
    """torchvision's ResNet with the stem width as a parameter (torchvision
    fixes it at 64). Blocks, _make_layer and forward are torchvision's own."""

    def __init__(self, block, layers, width, num_classes, groups=1, width_per_group=64):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, groups, width_per_group
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def make(name, block, layers, seed, grad_keys, width=4, **kw):
    torch.manual_seed(seed)
    net = NarrowResNet(block, layers, width=width, num_classes=10, **kw)
    # Non-trivial batch-norm statistics, so eval-mode BN is really tested.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(seed)
    net.eval()
    torch.save(net.state_dict(), os.path.join(HERE, name + ".pth"))

    x28 = torch.randn(2, 3, 28, 28, requires_grad=True)
    x64 = torch.randn(1, 3, 64, 64)
    logits28 = net(x28)
    r = torch.randn_like(logits28)
    (logits28 * r).sum().backward()
    params = dict(net.named_parameters())
    with torch.no_grad():
        logits64 = net(x64)
    out = {
        "source": "torch %s, torchvision NarrowResNet(%s, %s, width=%d, num_classes=10, %s), eval mode"
        % (torch.__version__, block.__name__, layers, width, kw),
        "x28": flat(x28), "x28_shape": list(x28.shape),
        "x64": flat(x64), "x64_shape": list(x64.shape),
        "logits28": flat(logits28), "logits64": flat(logits64),
        "r": flat(r),
        "grad_x28": flat(x28.grad),
        "grads": {k: flat(params[k].grad) for k in grad_keys},
        "num_params": sum(p.numel() for p in net.parameters()),
        "num_entries": len(net.state_dict()),
    }
    with open(os.path.join(HERE, name + ".json"), "w") as f:
        json.dump(out, f)


def archs():
    import torchvision.models as models
    out = {}
    for arch in ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                 "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"]:
        net = getattr(models, arch)()
        out[arch] = {
            "keys": [[k, list(v.shape)] for k, v in net.state_dict().items()],
            "num_params": sum(p.numel() for p in net.parameters()),
            # named_modules minus torchvision's parameterless ones (relu,
            # maxpool, avgpool): name, class, parameter count.
            "modules": [[n, type(m).__name__, sum(p.numel() for p in m.parameters())]
                        for n, m in net.named_modules() if n and list(m.parameters())],
        }
    with open(os.path.join(HERE, "torchvision_archs.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))


MAKERS = {
    "archs": archs,
    "resnet50_w4": lambda: make(
        "resnet50_w4", Bottleneck, [3, 4, 6, 3], 50,
        ["conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight", "layer2.0.bn2.weight", "fc.weight"]),
    "resnet18_w4": lambda: make("resnet18_w4", BasicBlock, [2, 2, 2, 2], 18,
                                ["conv1.weight", "layer3.0.conv2.weight", "fc.bias"]),
    "resnext_w8": lambda: make(
        "resnext_w8", Bottleneck, [1, 2, 1, 1], 8,
        ["layer1.0.conv2.weight", "layer2.1.conv2.weight", "layer4.0.conv1.weight"],
        width=8, groups=2, width_per_group=32),
}

if __name__ == "__main__":
    torch.set_num_threads(1)
    for what in sys.argv[1:] or list(MAKERS):
        MAKERS[what]()
