#!/usr/bin/env python3
"""Generate registry_gen.go from torchvision's own ResNet weights enums.

Every fact in the generated file (URLs, hash prefixes, parameter counts,
ImageNet-1K metrics, preprocessing, recipe links, the 1000 category names) is
read from the installed torchvision so nothing is typed by hand and a
torchvision upgrade is one `go generate ./weights/` away.

Run with an interpreter that has torchvision installed:

    /usr/bin/python3 weights/gen_registry.py

It writes registry_gen.go next to this script (or to --out FILE) and gofmts it.
"""

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from urllib.parse import urlparse

import torchvision
import torchvision.models as models
from torchvision.transforms._presets import ImageClassification

# The architectures lorafit fine-tunes (torchvision's resnet.py family) and
# their torchvision weights enums.
ENUMS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "resnet152": "ResNet152_Weights",
    "resnext50_32x4d": "ResNeXt50_32X4D_Weights",
    "resnext101_32x8d": "ResNeXt101_32X8D_Weights",
    "resnext101_64x4d": "ResNeXt101_64X4D_Weights",
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "wide_resnet101_2": "Wide_ResNet101_2_Weights",
}
ARCHS = list(ENUMS)

# torch.hub derives the expected SHA-256 prefix from the file name with this
# regex (torch/hub.py HASH_REGEX); use torch's own when it is importable so the
# two can never disagree.
try:
    from torch.hub import HASH_REGEX
except Exception:  # pragma: no cover - torch always ships with torchvision
    HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def go_str(s):
    # A JSON string with ASCII escapes is also a valid Go string literal.
    return json.dumps(s, ensure_ascii=True)


def go_float(x):
    return repr(float(x))


def transform_defaults():
    """Default keyword arguments of ImageClassification (mean, std, ...)."""
    params = inspect.signature(ImageClassification.__init__).parameters
    return {
        k: p.default
        for k, p in params.items()
        if k != "self" and p.default is not inspect.Parameter.empty
    }


def transforms_of(w, defaults):
    t = w.transforms
    if getattr(t, "func", None) is not ImageClassification:
        raise SystemExit(f"{w}: transforms is {t!r}, expected a partial of ImageClassification")
    if t.args:
        raise SystemExit(f"{w}: unexpected positional transform args {t.args!r}")
    kw = dict(defaults)
    kw.update(t.keywords)
    interp = kw["interpolation"]
    interp = getattr(interp, "value", interp)
    mean, std = tuple(kw["mean"]), tuple(kw["std"])
    if len(mean) != 3 or len(std) != 3:
        raise SystemExit(f"{w}: mean/std are not RGB triples: {mean} {std}")
    return {
        "resize": int(kw["resize_size"]),
        "crop": int(kw["crop_size"]),
        "mean": mean,
        "std": std,
        "interp": str(interp),
    }


def metrics_of(w):
    m = w.meta.get("_metrics") or w.meta.get("metrics")
    if not m:
        raise SystemExit(f"{w}: no metrics in meta")
    m = m.get("ImageNet-1K", m)
    return float(m["acc@1"]), float(m["acc@5"])


def hash_prefix_of(url):
    name = os.path.basename(urlparse(url).path)
    r = HASH_REGEX.search(name)
    if not r or len(r.group(1)) < 8:
        raise SystemExit(f"{url}: file name carries no sha256 prefix")
    return name, r.group(1)


def collect():
    defaults = transform_defaults()
    entries, enum_classes, default_weights = [], {}, {}
    categories = None
    for arch in ARCHS:
        enum_name = ENUMS[arch]
        enum = getattr(models, enum_name)
        enum_classes[arch] = enum_name
        default_weights[arch] = enum.DEFAULT.name
        # Iterating an Enum skips aliases such as DEFAULT.
        for w in enum:
            cats = list(w.meta["categories"])
            if categories is None:
                categories = cats
            elif cats != categories:
                raise SystemExit(f"{w}: categories differ from the first enum's; registry shares one list")
            _, prefix = hash_prefix_of(w.url)
            acc1, acc5 = metrics_of(w)
            entries.append(
                {
                    "name": f"{arch}/{w.name}",
                    "arch": arch,
                    "url": w.url,
                    "prefix": prefix,
                    "num_params": int(w.meta["num_params"]),
                    "acc1": acc1,
                    "acc5": acc5,
                    "recipe": w.meta.get("recipe", ""),
                    "t": transforms_of(w, defaults),
                }
            )
    if categories is None or len(categories) != 1000 or len(set(categories)) != 1000:
        raise SystemExit("expected 1000 unique ImageNet-1K categories")
    return entries, enum_classes, default_weights, categories


def render(entries, enum_classes, default_weights, categories):
    out = []
    w = out.append
    w(f"// Code generated by gen_registry.py from torchvision {torchvision.__version__}; DO NOT EDIT.\n\n")
    w("package weights\n\n")
    w('import "github.com/lorafit/lorafit/preprocess"\n\n')
    w("// torchvisionVersion is the torchvision release the registry was generated from.\n")
    w(f"const torchvisionVersion = {go_str(torchvision.__version__)}\n\n")
    w("// enumClasses maps an architecture to its torchvision weights enum class.\n")
    w("var enumClasses = map[string]string{\n")
    for arch in ARCHS:
        w(f"\t{go_str(arch)}: {go_str(enum_classes[arch])},\n")
    w("}\n\n")
    w("// defaultWeights is each enum's DEFAULT alias, as torchvision resolves it.\n")
    w("var defaultWeights = map[string]string{\n")
    for arch in ARCHS:
        w(f"\t{go_str(arch)}: {go_str(default_weights[arch])},\n")
    w("}\n\n")
    w("// registry holds every weights entry in torchvision's enum order.\n")
    w("var registry = []Weights{\n")
    for e in entries:
        t = e["t"]
        w("\t{\n")
        w(f"\t\tName: {go_str(e['name'])},\n")
        w(f"\t\tArch: {go_str(e['arch'])},\n")
        w(f"\t\tURL: {go_str(e['url'])},\n")
        w(f"\t\tSHA256Prefix: {go_str(e['prefix'])},\n")
        w(f"\t\tNumParams: {e['num_params']},\n")
        w(f"\t\tAcc1: {go_float(e['acc1'])},\n")
        w(f"\t\tAcc5: {go_float(e['acc5'])},\n")
        w(f"\t\tRecipe: {go_str(e['recipe'])},\n")
        w("\t\tPreprocess: preprocess.Preprocess{\n")
        w(f"\t\t\tCrop: {t['crop']},\n")
        w(f"\t\t\tResize: {t['resize']},\n")
        w(f"\t\t\tMean: [3]float32{{{', '.join(go_float(x) for x in t['mean'])}}},\n")
        w(f"\t\t\tStd: [3]float32{{{', '.join(go_float(x) for x in t['std'])}}},\n")
        w("\t\t},\n")
        w(f"\t\tInterpolation: {go_str(t['interp'])},\n")
        w("\t\tCategories: imagenetCategories,\n")
        w("\t},\n")
    w("}\n\n")
    w("// imagenetCategories are the ImageNet-1K class names in logit order,\n")
    w("// shared by every entry above.\n")
    w("var imagenetCategories = []string{\n")
    for c in categories:
        w(f"\t{go_str(c)},\n")
    w("}\n")
    return "".join(out)


def gofmt(path):
    exe = shutil.which("gofmt")
    if exe is None:
        go = shutil.which("go")
        if go is not None:
            root = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, check=True).stdout.strip()
            cand = os.path.join(root, "bin", "gofmt")
            if os.path.exists(cand):
                exe = cand
    if exe is None:
        raise SystemExit("gofmt not found; install Go or put gofmt on PATH")
    subprocess.run([exe, "-w", path], check=True)


def main():
    # --out lets the Go test regenerate into a temp file to check freshness.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry_gen.go")
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--out":
        path = args[1]
    elif args:
        raise SystemExit("usage: gen_registry.py [--out FILE]")
    entries, enum_classes, default_weights, categories = collect()
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(entries, enum_classes, default_weights, categories))
    gofmt(path)
    print(f"wrote {path}: {len(entries)} weights, {len(categories)} categories "
          f"(torchvision {torchvision.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
