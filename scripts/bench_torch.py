#!/usr/bin/python3
"""PyTorch's side of scripts/bench.sh, printing lines in `go test -bench`
format so the two can be read side by side:
  - eval-mode torchvision resnet50 inference, batch 64, per size;
  - the founding study's case 2 (LoRA r=8 on layerN.2.conv3 + trainable fc +
    head 512,256; frozen backbone with batch norm in eval mode; Adam) and
    case 4 (fc replaced by Linear(2048, 10)) training steps at 28x28.

    /usr/bin/python3 scripts/bench_torch.py [--sizes 28,224] [--iters 10]
"""
import argparse
import time

import torch
import torch.nn as nn
import torchvision


class LoraConv(nn.Module):
    """PEFT's LoRA on a Conv2d: base(x) + scaling * B(A(x))."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
        self.lora_B = nn.Conv2d(r, base.out_channels, 1, bias=False)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def case_model(case):
    net = torchvision.models.resnet50()
    for p in net.parameters():
        p.requires_grad = False
    if case == 2:
        for layer in [net.layer1, net.layer2, net.layer3, net.layer4]:
            layer[2].conv3 = LoraConv(layer[2].conv3, 8, 16)
        for p in net.fc.parameters():
            p.requires_grad = True
        head = nn.Sequential(nn.Linear(1000, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
        model = nn.Sequential(net, head)
    else:
        net.fc = nn.Linear(2048, 10)
        model = net
    net.eval()  # frozen batch norm, as lorafit trains
    return model


def bench_train(case, iters, batch):
    model = case_model(case)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        step()
    secs = time.perf_counter() - start
    print("TorchTrainStep/case%d/28x28/batch%d %d %.0f ns/op %.1f img/s" % (
        case, batch, iters, secs / iters * 1e9, batch * iters / secs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="28")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # A random-init ResNet's tiny gradients are denormal floats, which are
    # 10-25x slower on x86 unless flushed to zero; a trained network rarely
    # produces them. Flush, or the PyTorch side is measured at its worst.
    torch.set_flush_denormal(True)
    for case in (2, 4):
        bench_train(case, args.iters, args.batch)
    net = torchvision.models.resnet50().eval()
    for size in [int(s) for s in args.sizes.split(",")]:
        x = torch.randn(args.batch, 3, size, size)
        with torch.no_grad():
            net(x)  # warm-up
            start = time.perf_counter()
            for _ in range(args.iters):
                net(x)
            secs = time.perf_counter() - start
        print("TorchForward/resnet50/%dx%d/batch%d %d %.0f ns/op %.1f img/s" % (
            size, size, args.batch, args.iters, secs / args.iters * 1e9, args.batch * args.iters / secs))


if __name__ == "__main__":
    main()
