#!/usr/bin/python3
"""PyTorch's side of scripts/bench.sh: one measure, one variant, one line.

    /usr/bin/python3 scripts/bench_torch.py MEASURE VARIANT [--iters N] [--batch 64]

MEASURE is infer:SIZE (eval-mode torchvision resnet50, batch 64) or train:CASE
(the founding study's case 2 — LoRA r=8 on layerN.2.conv3, trainable fc, head
512,256 — or case 4 — fc replaced by Linear(2048, 10) — at 28x28: frozen
backbone with batch norm in eval mode, Adam). VARIANT is how PyTorch runs it:
nchw (the default), channels_last, and for inference jit_freeze
(torch.jit.freeze of the scripted model) and optimize_for_inference.
bench.sh runs every variant in its own process and keeps the fastest, so
PyTorch is measured at its best on this machine.

Prints: Torch MEASURE VARIANT <img/s> img/s <cpu%> cpu% <MiB> peakMiB
(cpu%: process CPU time over wall time during the timed loop, 200 = two busy
cores; peakMiB: the process's peak resident memory).
"""
import argparse
import resource
import sys
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
    """The founding study's cases 1-4 on a random torchvision resnet50."""
    net = torchvision.models.resnet50()
    for p in net.parameters():
        p.requires_grad = False
    head = None
    if case in (1, 2):
        head = nn.Sequential(nn.Linear(1000, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    if case == 3:
        head = nn.Linear(1000, 10)
    if case in (2, 3):
        pattern = ["conv3"] if case == 2 else ["conv1", "conv2", "conv3"]
        r, alpha = (8, 16) if case == 2 else (4, 8)
        for layer in [net.layer1, net.layer2, net.layer3, net.layer4]:
            for name in pattern:
                setattr(layer[2], name, LoraConv(getattr(layer[2], name), r, alpha))
        for p in net.fc.parameters():
            p.requires_grad = True
    if case == 4:
        net.fc = nn.Linear(2048, 10)
    model = nn.Sequential(net, head) if head is not None else net
    net.eval()  # frozen batch norm, as lorafit trains
    return model


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, iters):
    fn()  # warm-up (and the JIT's first runs)
    fn()
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    for _ in range(iters):
        fn()
    wall = time.perf_counter() - wall0
    return wall, 100 * (cpu_seconds() - cpu0) / wall


def bench_train(case, variant, iters, batch):
    model = case_model(case)
    x = torch.randn(batch, 3, 28, 28)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    elif variant != "nchw":
        raise SystemExit("train measures have variants nchw and channels_last")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    return timed(step, iters)


def bench_infer(size, variant, iters, batch):
    net = torchvision.models.resnet50().eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        if variant == "channels_last":
            net = net.to(memory_format=torch.channels_last)
            x = x.to(memory_format=torch.channels_last)
        elif variant == "jit_freeze":
            net = torch.jit.freeze(torch.jit.script(net))
        elif variant == "optimize_for_inference":
            net = torch.jit.optimize_for_inference(torch.jit.script(net))
        elif variant != "nchw":
            raise SystemExit("unknown variant %r" % variant)
        return timed(lambda: net(x), iters)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("measure")
    ap.add_argument("variant")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    # A random-init ResNet's tiny gradients are denormal floats, which are
    # 10-25x slower on x86 unless flushed to zero; a trained network rarely
    # produces them. Flush, or the PyTorch side is measured at its worst.
    torch.set_flush_denormal(True)
    kind, _, arg = args.measure.partition(":")
    if kind == "infer":
        wall, cpu = bench_infer(int(arg), args.variant, args.iters, args.batch)
    elif kind == "train":
        wall, cpu = bench_train(int(arg), args.variant, args.iters, args.batch)
    else:
        raise SystemExit("measure: infer:SIZE or train:CASE")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("Torch %s %s %.1f img/s %.0f cpu%% %.0f peakMiB" % (args.measure, args.variant,
                                                             args.batch * args.iters / wall, cpu, peak))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
