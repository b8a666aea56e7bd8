#!/usr/bin/python3
"""LoRA adapter parity: adapters written by lorafit, checked against PyTorch.

    scripts/parity-adapter.sh [--cases 2,3]      (builds lorafit, then runs this)
    /usr/bin/python3 scripts/parity_adapter.py --lorafit ./lorafit --dir /tmp/p [--cases 1,2,3,4] [--seed 7]
    /usr/bin/python3 scripts/parity_adapter.py --check-dir lora/testdata/case2_like [--lorafit ./lorafit]

The PyTorch side is lora/testdata/peft_ref.py (PEFT's semantics written out:
the `peft` and `safetensors` packages are not installed): it rebuilds the
adapted model from the adapter directory alone (adapter_config.json +
lorafit.json + adapter_model.safetensors read with its own strict reader) on
top of torchvision's resnet50, wrapping each target as PEFT does,
y = base(x) + lora_B(lora_A(x)) * scaling.

Default mode: saves a full-size random torchvision resnet50 (batch-norm stats
perturbed as in parity_full.py) with torch.save, then for each --cases preset
(default 1,2,3,4):
  1. `lorafit adapter init --weights BASE.pth --case N --init-lora-weights false
     --seed S --out DIR` exits 0 and writes the three files;
  2. adapter_config.json is the preset (peft_type LORA, target_modules, r,
     lora_alpha, modules_to_save, init_lora_weights false), lorafit.json too
     (lorafit_version 2, base arch resnet50 / 1000 classes / sha256 of
     BASE.pth, num_classes 10, head, replace_fc, preprocess: 28x28 as is,
     ImageNet mean/std);
  3. adapter_model.safetensors passes the strict reader, has __metadata__
     format "pt", only F32 tensors, and exactly PEFT's keys and shapes for the
     modules the config selects (the expected number of targets), and every
     lora_A and lora_B is nonzero;
  4. the LoRA deltas move PyTorch's logits by > 1e-2 relative (so the 1e-3
     comparisons below could not pass without them);
  5. `lorafit predict --weights BASE.pth --adapter DIR --image-size 28 --json`
     on cmd/lorafit/testdata/*.png: logits within 1e-3 relative
     (max |diff| / max |logit|) of PyTorch's adapted model, same top-1;
  6. `lorafit merge --weights BASE.pth --adapter DIR --out M.safetensors`
     exits 0; M passes the strict reader (__metadata__ format "pt"), holds torchvision's keys plus head.*
     with the right shapes (num_batches_tracked may be left out), and every
     tensor equals PyTorch's merge (base + scaling * B.A) within 1e-4 relative;
  7. PyTorch's plain model loaded with M gives the adapted logits (1e-3);
  8. `lorafit predict --weights M --image-size 28 --json` gives the adapted
     logits (1e-3), same top-1.
Then (unless --no-grouped) the same steps 3-8 for a LoRA on a grouped conv:
a full-size random resnext50_32x4d saved by torch.save, `lorafit train
--target layer1.0.conv2 --rank 32 --replace-fc` on 128 MNIST images
(lora_B grouped as PEFT builds it), loaded by PyTorch with the same logits,
and merged (the grouped conv becomes an ordinary one, which PEFT refuses) to
the same logits in PyTorch and in lorafit.
--check-dir DIR: steps 3-8 for an existing adapter directory (base weights
from --weights or lorafit.json's base.weights, sha256 checked); the Go steps
only with --lorafit; with an expected.json (lora/testdata fixtures), PyTorch's
logits must also equal the ones recorded there (1e-5).
Last line: "N passed, M failed"; exit status 1 on any failure.
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import traceback  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(REPO, "lora", "testdata"))
import peft_ref as pr  # noqa: E402

PNG_DIR = os.path.join(REPO, "cmd", "lorafit", "testdata")
TOL = 1e-3

# lorafit's --case presets, as documented for `lorafit adapter init`.
PRESETS = {
    1: dict(target_modules=None, r=None, lora_alpha=None, modules_to_save=["head"], head=[512, 256],
            replace_fc=False, num_targets=0),
    2: dict(target_modules=r".*\.2\.conv3", r=8, lora_alpha=16, modules_to_save=["fc", "head"], head=[512, 256],
            replace_fc=False, num_targets=4),
    3: dict(target_modules=r".*\.2\.conv[0-9]", r=4, lora_alpha=8, modules_to_save=["fc", "head"], head=[],
            replace_fc=False, num_targets=12),
    4: dict(target_modules=None, r=None, lora_alpha=None, modules_to_save=["fc"], head=None,
            replace_fc=True, num_targets=0),
}


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, []

    def __call__(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True)


def tail(s, n=300):
    s = s.strip()
    return s if len(s) <= n else "..." + s[-n:]


def go_predict(check, lorafit, tag, weights, adapter, pngs):
    """Runs lorafit predict --json; returns {png: logits tensor} or None."""
    cmd = [lorafit, "predict", "--weights", weights]
    if adapter:
        cmd += ["--adapter", adapter]
    out = run(cmd + ["--image-size", "28", "--json"] + pngs)
    if not check(out.returncode == 0, "%s: predict exits 0 %s" % (tag, tail(out.stderr))):
        return None
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if not check(len(lines) == len(pngs), "%s: predict prints %d JSON lines (want %d)" % (tag, len(lines), len(pngs))):
        return None
    return {p: torch.tensor(line["logits"], dtype=torch.float64) for p, line in zip(pngs, lines)}


def compare_logits(check, tag, got, want):
    for p in want:
        g, w = got[p], want[p]
        rel = pr.rel_diff(g, w)
        check(g.shape == w.shape and rel <= TOL and int(g.argmax()) == int(w.argmax()),
              "%s: %s: logits within %.1e relative (limit %.0e), top-1 %d vs torch %d"
              % (tag, os.path.basename(p), rel, TOL, int(g.argmax()) if g.numel() else -1, int(w.argmax())))


def torch_logits(net, pngs):
    with torch.no_grad():
        return {p: net(pr.load_image(p, 28).unsqueeze(0))[0].double() for p in pngs}


def check_adapter(check, tag, adapter_dir, base_pth, base_net, pngs, lorafit=None, workdir=None, expected_json=None,
                  num_targets=None):
    """Steps 3-8. base_net: the base model as PyTorch loaded it (not modified)."""
    # 3. the safetensors file and the model PyTorch builds from the directory.
    try:
        net, info = pr.load_adapted(copy.deepcopy(base_net), adapter_dir)
    except Exception as e:  # noqa: BLE001 - a refusal is the finding
        check(False, "%s: PyTorch rebuilds the adapted model from %s: %s" % (tag, adapter_dir, e))
        return
    tensors, _, dtypes = pr.read_safetensors(os.path.join(adapter_dir, pr.WEIGHTS_FILE))
    check(True, "%s: %s passes the strict reader; keys and shapes are PEFT's for targets %s, modules_to_save %s"
          % (tag, pr.WEIGHTS_FILE, [t[0] for t in info["targets"]], info["m2s"]))
    check((info["metadata"] or {}).get("format") == "pt", "%s: __metadata__ %s has format pt" % (tag, info["metadata"]))
    bad = sorted(k for k, dt in dtypes.items() if dt != "F32")
    check(not bad, "%s: every adapter tensor is F32 %s" % (tag, bad or ""))
    if num_targets is not None:
        check(len(info["targets"]) == num_targets, "%s: %d LoRA targets (want %d)" % (tag, len(info["targets"]), num_targets))
    zero = sorted(k for k, t in tensors.items() if ".lora_" in k and float(t.abs().max()) == 0)
    check(not zero, "%s: every lora_A / lora_B is nonzero %s" % (tag, zero or ""))
    want = torch_logits(net, pngs)

    # 4. the LoRA part matters at this tolerance.
    if info["targets"]:
        zeroed = torch_logits(pr.zero_lora_copy(net), pngs)
        effect = min(pr.rel_diff(zeroed[p], want[p]) for p in pngs)
        check(effect > 10 * TOL, "%s: LoRA moves PyTorch's logits by %.2e relative (must be > %.0e)"
              % (tag, effect, 10 * TOL))

    if expected_json and os.path.exists(expected_json):
        exp = pr.read_json(expected_json)
        x = torch.tensor(exp["x"]).reshape(exp["x_shape"])
        with torch.no_grad():
            rel = pr.rel_diff(net(x), torch.tensor(exp["logits"]).reshape(exp["logits_shape"]))
        check(rel <= 1e-5, "%s: logits for expected.json's x equal the recorded ones (%.1e)" % (tag, rel))
        rel = max(pr.rel_diff(want[p], exp["png_logits"][os.path.basename(p)]) for p in pngs)
        check(rel <= 1e-5, "%s: PNG logits equal expected.json's png_logits (%.1e)" % (tag, rel))

    # PyTorch's own merge must not change the logits (sanity of the reference).
    torch_merged = pr.merged_state_dict(net)
    plain, missing, unexpected = pr.plain_model(copy.deepcopy(base_net), info["lcfg"], torch_merged)
    rel = max(pr.rel_diff(v, want[p]) for p, v in torch_logits(plain, pngs).items())
    check(not missing and not unexpected and rel <= 1e-5,
          "%s: PyTorch's merged plain model gives the adapted logits (%.1e)" % (tag, rel))

    if not lorafit:
        return
    # 5. Go's adapted model.
    got = go_predict(check, lorafit, tag, base_pth, adapter_dir, pngs)
    if got is not None:
        compare_logits(check, tag + " predict --adapter", got, want)

    # 6. Go's merge.
    merged = os.path.join(workdir, os.path.basename(os.path.normpath(adapter_dir)) + "-merged.safetensors")
    out = run([lorafit, "merge", "--weights", base_pth, "--adapter", adapter_dir, "--out", merged])
    if not check(out.returncode == 0 and os.path.exists(merged), "%s: merge exits 0 and writes %s %s"
                 % (tag, merged, tail(out.stderr))):
        return
    try:
        m_tensors, m_meta, m_dtypes = pr.read_safetensors(merged)
    except ValueError as e:
        check(False, "%s: merged file passes the strict reader: %s" % (tag, e))
        return
    check((m_meta or {}).get("format") == "pt", "%s: merged file passes the strict reader, __metadata__ format pt (%s)"
          % (tag, m_meta))
    missing = sorted(k for k in torch_merged if k not in m_tensors and not k.endswith(".num_batches_tracked"))
    extra = sorted(k for k in m_tensors if k not in torch_merged)
    check(not missing and not extra, "%s: merged keys are torchvision's plus head.* (missing %s, unexpected %s)"
          % (tag, missing[:5], extra[:5]))
    shapes = sorted(k for k in m_tensors if k in torch_merged and tuple(m_tensors[k].shape) != tuple(torch_merged[k].shape))
    check(not shapes, "%s: merged shapes equal PyTorch's %s" % (tag, shapes[:5]))
    if shapes or extra:
        return
    bad = sorted(k for k, dt in m_dtypes.items() if dt != ("I64" if k.endswith("num_batches_tracked") else "F32"))
    check(not bad, "%s: merged tensors are F32 (num_batches_tracked I64) %s" % (tag, bad[:5]))
    worst, worst_key = 0.0, ""
    for k, t in m_tensors.items():
        if t.is_floating_point():
            rel = pr.rel_diff(t, torch_merged[k])
            if rel > worst:
                worst, worst_key = rel, k
    check(worst <= 1e-4, "%s: merged tensors equal PyTorch's base + scaling*B.A (worst %.1e at %s)"
          % (tag, worst, worst_key or "-"))
    # 7. PyTorch runs Go's merged weights.
    plain, missing, unexpected = pr.plain_model(copy.deepcopy(base_net), info["lcfg"], m_tensors)
    missing = [k for k in missing if not k.endswith(".num_batches_tracked")]
    if check(not missing and not unexpected, "%s: PyTorch loads the merged file" % tag):
        compare_logits(check, tag + " torch(merged)", torch_logits(plain, pngs), want)
    # 8. Go runs its merged weights.
    got = go_predict(check, lorafit, tag + " merged", merged, None, pngs)
    if got is not None:
        compare_logits(check, tag + " predict merged", got, want)


def full_size_base(path, arch="resnet50"):
    import torchvision
    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    torch.save(net.state_dict(), path)
    return net


def close(a, b):
    return len(a) == len(b) and all(abs(x - y) <= 1e-9 for x, y in zip(a, b))


def check_configs(check, tag, adapter_dir, preset, sha):
    acfg = pr.read_json(os.path.join(adapter_dir, pr.CONFIG_FILE))
    lcfg = pr.read_json(os.path.join(adapter_dir, pr.LORAFIT_FILE))
    check(acfg.get("peft_type") == "LORA", "%s: peft_type %r" % (tag, acfg.get("peft_type")))
    tm = acfg.get("target_modules")
    if preset["target_modules"] is None:
        check(not tm, "%s: no target_modules (got %r)" % (tag, tm))
    else:
        check(tm == preset["target_modules"] and acfg.get("r") == preset["r"]
              and acfg.get("lora_alpha") == preset["lora_alpha"],
              "%s: target_modules %r r %r lora_alpha %r (want %r, %r, %r)"
              % (tag, tm, acfg.get("r"), acfg.get("lora_alpha"), preset["target_modules"], preset["r"],
                 preset["lora_alpha"]))
        check(acfg.get("init_lora_weights") is False, "%s: init_lora_weights %r (want false)"
              % (tag, acfg.get("init_lora_weights")))
    check(sorted(acfg.get("modules_to_save") or []) == sorted(preset["modules_to_save"]),
          "%s: modules_to_save %r" % (tag, acfg.get("modules_to_save")))
    base = lcfg.get("base") or {}
    check(lcfg.get("lorafit_version") == 2 and base.get("arch") == "resnet50" and base.get("num_classes") == 1000
          and base.get("sha256") == sha,
          "%s: lorafit.json version %r, base arch %r, %r classes, sha256 %s"
          % (tag, lcfg.get("lorafit_version"), base.get("arch"), base.get("num_classes"),
             "matches" if base.get("sha256") == sha else "%r != %s" % (base.get("sha256"), sha)))
    check(lcfg.get("num_classes") == 10 and lcfg.get("head") == preset["head"]
          and bool(lcfg.get("replace_fc")) == preset["replace_fc"],
          "%s: num_classes %r, head %r, replace_fc %r" % (tag, lcfg.get("num_classes"), lcfg.get("head"),
                                                          lcfg.get("replace_fc")))
    pre = lcfg.get("preprocess") or {}
    check(pre.get("crop_size") == 28 and pre.get("resize_size") == 28 and close(pre.get("mean") or [], pr.IMAGENET_MEAN)
          and close(pre.get("std") or [], pr.IMAGENET_STD), "%s: preprocess %r (want 28x28 as is, ImageNet mean/std)" % (tag, pre))


def go_cases(check, args, pngs):
    os.makedirs(args.dir, exist_ok=True)
    pth = os.path.join(args.dir, "resnet50_random.pth")
    base_net = full_size_base(pth)
    sha = pr.sha256_file(pth)
    for n in [int(c) for c in args.cases.split(",")]:
        tag = "case %d" % n
        out_dir = os.path.join(args.dir, "case%d" % n)
        try:
            out = run([args.lorafit, "adapter", "init", "--weights", pth, "--case", str(n), "--init-lora-weights", "false",
                       "--seed", str(args.seed + n), "--out", out_dir])
            files = [f for f in (pr.CONFIG_FILE, pr.WEIGHTS_FILE, pr.LORAFIT_FILE)
                     if os.path.exists(os.path.join(out_dir, f))]
            if not check(out.returncode == 0 and len(files) == 3, "%s: adapter init exits 0 and writes the 3 files %s %s"
                         % (tag, files, tail(out.stderr))):
                continue
            check_configs(check, tag, out_dir, PRESETS[n], sha)
            check_adapter(check, tag, out_dir, pth, base_net, pngs, lorafit=args.lorafit, workdir=args.dir,
                          num_targets=PRESETS[n]["num_targets"])
        except Exception:  # noqa: BLE001 - report and go on with the next case
            check(False, "%s: unexpected error:\n%s" % (tag, traceback.format_exc()))


def grouped_case(check, args, pngs):
    tag = "resnext50_32x4d layer1.0.conv2"
    pth = os.path.join(args.dir, "resnext50_random.pth")
    base_net = full_size_base(pth, "resnext50_32x4d")
    out_dir = os.path.join(args.dir, "resnext")
    try:
        out = run([args.lorafit, "train", "--weights", pth, "--target", "layer1.0.conv2", "--rank", "32", "--alpha", "64",
                   "--replace-fc", "--head", "none", "--save-modules", "fc", "--init-lora-weights", "false", "--limit-train", "128",
                   "--limit-test", "32", "--batch", "32", "--seed", str(args.seed), "--out", out_dir])
        if not check(out.returncode == 0, "%s: lorafit train exits 0 %s" % (tag, tail(out.stderr))):
            return
        adapter = os.path.join(out_dir, "adapter")
        tensors, _, _ = pr.read_safetensors(os.path.join(adapter, pr.WEIGHTS_FILE))
        b = tensors.get(pr.PREFIX + "layer1.0.conv2.lora_B.weight")
        check(b is not None and list(b.shape) == [128, 1, 1, 1], "%s: lora_B is grouped as PEFT's, shape %s (want [128, 1, 1, 1])"
              % (tag, None if b is None else list(b.shape)))
        check_adapter(check, tag, adapter, pth, base_net, pngs, lorafit=args.lorafit, workdir=args.dir, num_targets=1)
    except Exception:  # noqa: BLE001
        check(False, "%s: unexpected error:\n%s" % (tag, traceback.format_exc()))
    finally:
        os.remove(pth)


def dir_case(check, args, pngs):
    lcfg = pr.read_json(os.path.join(args.check_dir, pr.LORAFIT_FILE))
    weights = args.weights or lcfg["base"]["weights"]
    if not os.path.isabs(weights) and not os.path.exists(weights):
        weights = os.path.join(REPO, weights)
    sha = pr.sha256_file(weights)
    check(lcfg["base"].get("sha256") == sha, "%s: lorafit.json's base sha256 is %s's" % (args.check_dir, weights))
    base_net = pr.base_from_state_dict(pr.load_state_dict(weights), lcfg["base"]["arch"])
    workdir = args.dir
    if args.lorafit and not workdir:
        import tempfile
        workdir = tempfile.mkdtemp(prefix="parity-adapter-")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
    try:
        check_adapter(check, args.check_dir, args.check_dir, weights, base_net, pngs, lorafit=args.lorafit,
                      workdir=workdir, expected_json=os.path.join(args.check_dir, "expected.json"))
    except Exception:  # noqa: BLE001
        check(False, "%s: unexpected error:\n%s" % (args.check_dir, traceback.format_exc()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lorafit", help="the lorafit binary")
    ap.add_argument("--dir", help="scratch directory (base weights, adapters, merged files)")
    ap.add_argument("--cases", default="1,2,3,4", help="adapter init presets to check")
    ap.add_argument("--seed", type=int, default=7, help="adapter init seed (plus the case number)")
    ap.add_argument("--no-grouped", action="store_true", help="skip the ResNeXt grouped-conv LoRA")
    ap.add_argument("--check-dir", help="check this existing adapter directory instead of running adapter init")
    ap.add_argument("--weights", help="with --check-dir: base weights (default: lorafit.json's base.weights)")
    args = ap.parse_args()
    if not args.check_dir and not (args.lorafit and args.dir):
        ap.error("give --lorafit and --dir, or --check-dir")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    pngs = sorted(os.path.join(PNG_DIR, f) for f in os.listdir(PNG_DIR) if f.endswith(".png"))
    check = Checks()
    check(len(pngs) == 3, "3 sample PNGs in %s" % PNG_DIR)
    if args.check_dir:
        dir_case(check, args, pngs)
    else:
        go_cases(check, args, pngs)
        if not args.no_grouped:
            grouped_case(check, args, pngs)
    print("%d passed, %d failed" % (check.passed, len(check.failed)))
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    main()
