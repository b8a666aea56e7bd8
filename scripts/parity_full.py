#!/usr/bin/python3
"""Full-size parity: a torchvision resnet50 saved by PyTorch, read by lorafit.

    scripts/parity-full.sh            (builds lorafit, then runs this)
    /usr/bin/python3 scripts/parity_full.py --lorafit ./lorafit --dir /tmp/parity

Checks, each against what PyTorch itself says:
  1. `lorafit inspect --json` lists every state_dict entry (320) with the
     same names, shapes and the same parameter count (25,557,032);
  2. `lorafit predict --json` logits for a 224x224 image match torchvision's
     eval-mode logits within 1e-3 relative (max |diff| / max |logit|);
  3. a truncated copy of the file is refused with an error naming it and a
     non-zero exit code, and leaves no output.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorafit", required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    torch.manual_seed(0)
    net = torchvision.models.resnet50()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    pth = os.path.join(args.dir, "resnet50_random.pth")
    torch.save(net.state_dict(), pth)

    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    # 1. inspect
    out = subprocess.run([args.lorafit, "inspect", "--json", pth], capture_output=True, text=True)
    check(out.returncode == 0, "inspect exits 0 (%s)" % out.stderr.strip()[-200:])
    rep = json.loads(out.stdout)
    sd = net.state_dict()
    want = [[k, list(v.shape)] for k, v in sd.items()]
    got = [[t["name"], t["shape"]] for t in rep["tensors"]]
    check(rep["entries"] == len(sd) == 320, "inspect: %d entries, torch %d" % (rep["entries"], len(sd)))
    check(got == want, "inspect: names and shapes equal torch's, in order")
    nparams = sum(p.numel() for p in net.parameters())
    check(rep["params"] == nparams == 25557032, "inspect: %d params, torch %d" % (rep["params"], nparams))

    # 2. predict
    rng = np.random.default_rng(0)
    img_path = os.path.join(args.dir, "random224.png")
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB").save(img_path)
    x = F.normalize(F.to_tensor(Image.open(img_path).convert("RGB")),
                    [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).unsqueeze(0)
    with torch.no_grad():
        want_logits = net(x)[0].numpy()
    out = subprocess.run([args.lorafit, "predict", "--weights", pth, "--image-size", "224", "--json", img_path],
                         capture_output=True, text=True)
    check(out.returncode == 0, "predict exits 0 (%s)" % out.stderr.strip()[-200:])
    got_logits = np.array(json.loads(out.stdout.splitlines()[0])["logits"], dtype=np.float64)
    rel = np.abs(got_logits - want_logits).max() / np.abs(want_logits).max()
    check(got_logits.shape == want_logits.shape and rel <= 1e-3,
          "predict: logits within %.1e relative of torchvision's (limit 1e-3)" % rel)
    check(int(got_logits.argmax()) == int(want_logits.argmax()), "predict: same top-1 class")

    # 3. truncated file
    bad = os.path.join(args.dir, "truncated.pth")
    with open(pth, "rb") as f, open(bad, "wb") as g:
        g.write(f.read()[: os.path.getsize(pth) // 2])
    out = subprocess.run([args.lorafit, "inspect", bad], capture_output=True, text=True)
    check(out.returncode != 0 and bad in out.stderr and out.stdout == "",
          "truncated file refused: exit %d, %s" % (out.returncode, out.stderr.strip()[:200]))

    print("%d passed, %d failed" % (7 - len(failures), len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
