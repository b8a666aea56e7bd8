#!/usr/bin/python3
"""Full-size parity: torchvision models saved by PyTorch, read by lorafit.

    scripts/parity-full.sh            (builds lorafit, then runs this)
    /usr/bin/python3 scripts/parity_full.py --lorafit ./lorafit --dir /tmp/parity [--archs a,b]

For each architecture (default resnet50, resnext50_32x4d, wide_resnet50_2:
the plain, grouped and wide bottlenecks), randomly initialized by
torchvision with perturbed batch-norm statistics and saved by torch.save,
checks against what PyTorch itself says:
  1. `lorafit inspect --json` lists every state_dict entry with the same
     names and shapes, in order, and torchvision's parameter count (25,557,032
     / 25,028,904 / 68,883,240);
  2. `lorafit predict --json` logits for a 224x224 image match torchvision's
     eval-mode logits within 1e-3 relative (max |diff| / max |logit|), and
     the top-1 class;
and for resnet50, that a truncated copy of the file is refused with an error
naming it and a non-zero exit code, and leaves no output.
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


PARAMS = {"resnet50": 25557032, "resnext50_32x4d": 25028904, "wide_resnet50_2": 68883240}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lorafit", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--archs", default=",".join(PARAMS))
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    failures, passed = [], [0]

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if ok:
            passed[0] += 1
        else:
            failures.append(what)

    rng = np.random.default_rng(0)
    img_path = os.path.join(args.dir, "random224.png")
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB").save(img_path)
    x = F.normalize(F.to_tensor(Image.open(img_path).convert("RGB")),
                    [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).unsqueeze(0)
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        net = getattr(torchvision.models, arch)()
        with torch.no_grad():  # non-trivial batch-norm statistics
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
        net.eval()
        pth = os.path.join(args.dir, arch + "_random.pth")
        torch.save(net.state_dict(), pth)

        # 1. inspect
        out = subprocess.run([args.lorafit, "inspect", "--json", pth], capture_output=True, text=True)
        check(out.returncode == 0, "%s: inspect exits 0 (%s)" % (arch, out.stderr.strip()[-200:]))
        rep = json.loads(out.stdout)
        sd = net.state_dict()
        want = [[k, list(v.shape)] for k, v in sd.items()]
        got = [[t["name"], t["shape"]] for t in rep["tensors"]]
        check(rep["entries"] == len(sd), "%s: inspect: %d entries, torch %d" % (arch, rep["entries"], len(sd)))
        check(got == want, "%s: inspect: names and shapes equal torch's, in order" % arch)
        nparams = sum(p.numel() for p in net.parameters())
        check(rep["params"] == nparams == PARAMS[arch], "%s: inspect: %d params, torch %d" % (arch, rep["params"], nparams))
        check(rep.get("architecture", "").startswith(arch + " "), "%s: inspect names it %r" % (arch, rep.get("architecture")))

        # 2. predict
        with torch.no_grad():
            want_logits = net(x)[0].numpy()
        out = subprocess.run([args.lorafit, "predict", "--weights", pth, "--image-size", "224", "--json", img_path],
                             capture_output=True, text=True)
        check(out.returncode == 0, "%s: predict exits 0 (%s)" % (arch, out.stderr.strip()[-200:]))
        got_logits = np.array(json.loads(out.stdout.splitlines()[0])["logits"], dtype=np.float64)
        rel = np.abs(got_logits - want_logits).max() / np.abs(want_logits).max()
        check(got_logits.shape == want_logits.shape and rel <= 1e-3,
              "%s: predict: logits within %.1e relative of torchvision's (limit 1e-3)" % (arch, rel))
        check(int(got_logits.argmax()) == int(want_logits.argmax()), "%s: predict: same top-1 class" % arch)

        if arch == "resnet50":  # 3. truncated file
            bad = os.path.join(args.dir, "truncated.pth")
            with open(pth, "rb") as f, open(bad, "wb") as g:
                g.write(f.read()[: os.path.getsize(pth) // 2])
            out = subprocess.run([args.lorafit, "inspect", bad], capture_output=True, text=True)
            check(out.returncode != 0 and bad in out.stderr and out.stdout == "",
                  "truncated file refused: exit %d, %s" % (out.returncode, out.stderr.strip()[:200]))
        os.remove(pth)

    print("%d passed, %d failed" % (passed[0], len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
