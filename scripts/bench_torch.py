#!/usr/bin/python3
"""PyTorch's side of scripts/bench.sh: eval-mode torchvision resnet50,
batch 64, printing one line per size in `go test -bench` format so the two
can be read side by side.

    /usr/bin/python3 scripts/bench_torch.py [--sizes 28,224] [--iters 10]
"""
import argparse
import time

import torch
import torchvision


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="28")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
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
