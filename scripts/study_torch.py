#!/usr/bin/python3
"""PyTorch's side of scripts/bench-study.sh: the founding study's four cases
as four plain PyTorch training loops on the same MNIST subset lorafit uses
(lorafit's embedded idx files, its class-balanced subset: each class's share,
largest remainders, first images in file order), one epoch each, batch 64,
Adam, then evaluation on the test subset. Frozen backbone with batch norm in
eval mode, as lorafit trains; the same network layout (channels_last or not)
that bench.sh found fastest is a flag.

    /usr/bin/python3 scripts/study_torch.py --train 3200 --test 1000 [--format nchw|channels_last]

Prints one line per case (seconds, accuracy) and a last line
"TorchStudy <seconds> s <cpu%> cpu% <MiB> peakMiB".
"""
import argparse
import gzip
import os
import resource
import struct
import time

import numpy as np
import torch
import torch.nn as nn

from bench_torch import case_model, cpu_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
MNIST = os.path.join(HERE, "..", "data", "mnist")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def idx(name):
    with gzip.open(os.path.join(MNIST, name)) as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = struct.unpack(">%dI" % (magic & 0xFF), data[4:4 + 4 * (magic & 0xFF)])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def subset(labels, n):
    """lorafit's data.Dataset.Subset: class quotas by largest remainders."""
    total = len(labels)
    counts = np.bincount(labels, minlength=10)
    quota = [n * int(c) // total for c in counts]
    rems = sorted(range(10), key=lambda c: -(n * int(counts[c]) % total))  # stable: ties keep class order
    given = sum(quota)
    for c in rems:
        if given >= n:
            break
        quota[c] += 1
        given += 1
    out = []
    for i, l in enumerate(labels):
        if quota[l] > 0:
            quota[l] -= 1
            out.append(i)
    return np.array(out)


def tensors(images, labels, n, fmt):
    keep = subset(labels, n) if n < len(labels) else np.arange(len(labels))
    x = images[keep].astype(np.float32) / 255.0
    x = (x[:, None, :, :] - MEAN[None, :, None, None]) / STD[None, :, None, None]  # gray -> 3 channels
    x = torch.from_numpy(np.ascontiguousarray(x))
    if fmt == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x, torch.from_numpy(labels[keep].astype(np.int64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=3200)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--format", default="nchw")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    xtr, ytr = tensors(idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz"), args.train, args.format)
    xte, yte = tensors(idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz"), args.test, args.format)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    for case in (1, 2, 3, 4):
        start = time.perf_counter()
        model = case_model(case)
        if args.format == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        loss_fn = nn.CrossEntropyLoss()
        order = torch.randperm(len(ytr))
        for b in range(len(ytr) // args.batch):  # drop_last, as lorafit
            i = order[b * args.batch:(b + 1) * args.batch]
            opt.zero_grad()
            loss_fn(model(xtr[i]), ytr[i]).backward()
            opt.step()
        correct = 0
        with torch.no_grad():
            for lo in range(0, len(yte), args.batch):
                correct += int((model(xte[lo:lo + args.batch]).argmax(1) == yte[lo:lo + args.batch]).sum())
        print("case %d: %.1f s, test accuracy %.4f" % (case, time.perf_counter() - start, correct / len(yte)), flush=True)
    wall = time.perf_counter() - wall0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("TorchStudy %.1f s %.0f cpu%% %.0f peakMiB" % (wall, 100 * (cpu_seconds() - cpu0) / wall, peak))


if __name__ == "__main__":
    main()
