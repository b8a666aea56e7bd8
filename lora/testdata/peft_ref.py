#!/usr/bin/python3
"""A PyTorch reference for lorafit adapters, written from HF PEFT's documented
semantics (the `peft` and `safetensors` Python packages are not installed and
are not used). Shared by lora/testdata/make_fixtures.py and
scripts/parity_adapter.py; nothing here runs on import.

An adapter is a directory holding
  adapter_config.json        PEFT's LoraConfig fields
  adapter_model.safetensors  PEFT's key names, fp32:
      base_model.model.<module>.lora_A.weight / .lora_B.weight   (LoRA targets)
      base_model.model.<module>.<param>                          (modules_to_save)
  lorafit.json               base weights (arch, path, sha256), num_classes,
                             head, replace_fc, preprocessing

The adapted model is the torchvision ResNet itself, so module names stay
torchvision's (`layer1.2.conv3`, `fc`): `fc` is optionally replaced by
Linear(features -> num_classes), a head nn.Sequential (`head.0`, `head.2`,
...) is attached as `net.head` and applied to the ResNet's output, and every
LoRA target is wrapped as PEFT's lora.Conv2d / lora.Linear do:
    y = base(x) + lora_B(lora_A(dropout(x))) * scaling
with lora_A a conv with the base conv's kernel, stride and padding (no bias)
or Linear(in, r), and lora_B a 1x1 conv or Linear(r, out).

Matching (PEFT's check_target_module_exists / get_pattern_key):
  target_modules str   -> re.fullmatch(target_modules, name)
  target_modules list  -> name == t or name.endswith("." + t)
  rank/alpha_pattern   -> first key p (JSON order) with
                          re.match(rf"(.*\\.)?({p})$", name)
  scaling              -> alpha / r, or alpha / sqrt(r) with use_rslora
modules_to_save entries are matched like list targets (exact name or dotted
suffix); every parameter and buffer of such a module is saved under
base_model.model.<module>.<key>.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the testdata dirs

import copy  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PREFIX = "base_model.model."

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LORAFIT_FILE = "lorafit.json"

# ---------------------------------------------------------------------------
# safetensors, from the format's specification: 8-byte little-endian header
# length N, N bytes of JSON {name: {dtype, shape, data_offsets}, "__metadata__":
# {str: str}} padded with spaces to a multiple of 8, then the data.

# dtype -> (element size, numpy dtype or None, the reference writer's rank)
ST_DTYPES = {
    "BOOL": (1, np.bool_, 0),
    "U8": (1, np.uint8, 1),
    "I8": (1, np.int8, 2),
    "I16": (2, np.int16, 5),
    "F16": (2, np.float16, 7),
    "BF16": (2, None, 8),
    "I32": (4, np.int32, 9),
    "F32": (4, np.float32, 11),
    "F64": (8, np.float64, 12),
    "I64": (8, np.int64, 13),
}
TORCH_TO_ST = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.int64: "I64",
               torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def save_safetensors(path, tensors, metadata):
    """Writes {name: torch.Tensor} like the reference writer: tensors ordered by
    descending dtype rank then name, compact JSON with __metadata__ first,
    header space-padded to a multiple of 8, contiguous data."""
    entries = []
    for name, t in tensors.items():
        dt = TORCH_TO_ST[t.dtype]
        entries.append((name, dt, t))
    entries.sort(key=lambda e: (-ST_DTYPES[e[1]][2], e[0]))
    header = {"__metadata__": {k: metadata[k] for k in sorted(metadata)}}
    blobs, offset = [], 0
    for name, dt, t in entries:
        data = t.detach().cpu().contiguous().numpy().astype(np.dtype(ST_DTYPES[dt][1]).newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    os.replace(tmp, path)


def read_safetensors(path):
    """Strict reader. Returns ({name: torch.Tensor}, metadata or None,
    {name: dtype string}). Refuses: a header not padded to 8 bytes or padded
    with anything but spaces, duplicate keys, holes/overlaps between tensors,
    sizes that disagree with shapes, trailing bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError("%s: shorter than 8 bytes" % path)
    (n,) = struct.unpack("<Q", blob[:8])
    if n > 100_000_000 or 8 + n > len(blob):
        raise ValueError("%s: bad header length %d" % (path, n))
    if n % 8:
        raise ValueError("%s: header length %d is not a multiple of 8" % (path, n))
    text = blob[8:8 + n].decode("utf-8")
    if not text.startswith("{") or not text.rstrip(" ").endswith("}"):
        raise ValueError("%s: header must be a JSON object padded with spaces" % path)

    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("%s: duplicate keys in header" % path)
        return dict(pairs)

    header = json.loads(text, object_pairs_hook=no_dups)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError("%s: __metadata__ values must be strings" % path)
    buf = blob[8 + n:]
    pos = 0
    tensors, dtypes = {}, {}
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        dt, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        if begin != pos:
            raise ValueError("%s: %r: hole or overlap at %d" % (path, name, begin))
        size, npdt, _ = ST_DTYPES[dt]
        if end - begin != math.prod(shape) * size:
            raise ValueError("%s: %r: %d bytes for shape %s %s" % (path, name, end - begin, shape, dt))
        raw = buf[begin:end]
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(npdt).newbyteorder("<")).astype(npdt)
        tensors[name] = torch.from_numpy(arr.reshape(shape).copy())
        dtypes[name] = dt
        pos = end
    if pos != len(buf):
        raise ValueError("%s: %d trailing bytes" % (path, len(buf) - pos))
    return tensors, metadata, dtypes


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# PEFT's matching rules.

def target_matches(target_modules, name):
    if not target_modules:  # None, "" or []: no LoRA
        return False
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def name_in(names, name):
    """modules_to_save rule: the exact name or a dotted suffix."""
    return any(name == t or name.endswith("." + t) for t in names or [])


def pattern_value(patterns, name):
    for p, v in (patterns or {}).items():  # json.load keeps the file's order
        if re.match(r"(.*\.)?(%s)$" % p, name):
            return v
    return None


def rank_alpha_scaling(cfg, name):
    r = pattern_value(cfg.get("rank_pattern"), name)
    r = cfg["r"] if r is None else r
    alpha = pattern_value(cfg.get("alpha_pattern"), name)
    alpha = cfg["lora_alpha"] if alpha is None else alpha
    if r != int(r) or r <= 0:
        raise ValueError("%s: rank %r is not a positive integer" % (name, r))
    r = int(r)
    scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    return r, alpha, scaling


# ---------------------------------------------------------------------------
# The layers.

class LoraLayer(nn.Module):
    """PEFT's lora.Conv2d / lora.Linear for one adapter. Parameter names:
    base_layer.weight, lora_A.weight, lora_B.weight (PEFT adds `.default`
    between lora_A and weight in memory and strips it when saving)."""

    def __init__(self, base, r, alpha, scaling, dropout=0.0):
        super().__init__()
        self.base_layer = base
        self.r, self.alpha, self.scaling = r, alpha, scaling
        if isinstance(base, nn.Conv2d):
            if base.dilation != (1, 1) or base.padding_mode != "zeros":
                raise ValueError("only plain convolutions are supported")
            if r % base.groups:
                raise ValueError("rank %d of a conv with groups=%d: PEFT wants it divisible" % (r, base.groups))
            # PEFT: lora_A is an ordinary conv, lora_B a 1x1 conv with the base's groups.
            self.lora_A = nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)
            self.lora_B = nn.Conv2d(r, base.out_channels, (1, 1), (1, 1), groups=base.groups, bias=False)
        elif isinstance(base, nn.Linear):
            self.lora_A = nn.Linear(base.in_features, r, bias=False)
            self.lora_B = nn.Linear(r, base.out_features, bias=False)
        else:
            raise TypeError("LoRA wraps only Conv2d and Linear, not %s" % type(base).__name__)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self):
        """scaling * B.A in the base weight's layout, as PEFT's get_delta_weight.
        For a grouped conv (which PEFT refuses to merge) the update reads every
        input channel: it is dense, [out, in, k, k] (see densify)."""
        a, b = self.lora_A.weight, self.lora_B.weight
        groups = getattr(self.base_layer, "groups", 1)
        if groups > 1:
            r, out = a.shape[0], b.shape[0]
            ag = a.reshape(groups, r // groups, -1)          # [G, r/G, in*k*k]
            bg = b.reshape(groups, out // groups, r // groups)  # [G, out/G, r/G]
            return torch.bmm(bg, ag).reshape(out, *a.shape[1:]) * self.scaling
        if isinstance(self.base_layer, nn.Linear):
            d = b @ a
        elif a.shape[2:] == (1, 1):
            d = (b.squeeze(3).squeeze(2) @ a.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
        else:
            d = F.conv2d(a.permute(1, 0, 2, 3), b).permute(1, 0, 2, 3)
        return d * self.scaling


def _set_module(net, name, module):
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


def attach_head(net, head):
    """net.head = head; forward becomes head(original forward)."""
    net.head = head
    base_cls = type(net)

    class WithHead(base_cls):
        def forward(self, x):
            return self.head(base_cls.forward(self, x))

    WithHead.__name__ = base_cls.__name__ + "WithHead"
    net.__class__ = WithHead


def make_head(in_features, hidden, num_classes):
    dims = [in_features] + [int(h) for h in hidden] + [num_classes]
    layers = []
    for i in range(len(dims) - 1):
        if i:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(dims[i], dims[i + 1]))
    return nn.Sequential(*layers)


def apply_lorafit(net, lcfg):
    """lorafit.json's structure: replace_fc, then the head. Returns the names of
    the modules it created (their weights must come from the adapter)."""
    created = []
    nc = lcfg["num_classes"]
    if lcfg.get("replace_fc"):
        net.fc = nn.Linear(net.fc.in_features, nc)
        created.append("fc")
    if lcfg.get("head") is not None:
        attach_head(net, make_head(net.fc.out_features, lcfg["head"], nc))
        created.append("head")
    elif net.fc.out_features != nc:
        raise ValueError("num_classes %d but fc has %d outputs and there is no head" % (nc, net.fc.out_features))
    return created


def apply_lora(net, acfg):
    """Wraps adapter_config.json's targets in place (new LoRA weights keep
    torch's default init: PEFT's init_lora_weights=False). Returns
    (targets [(name, r, alpha, scaling)], modules_to_save [names])."""
    if acfg.get("peft_type", "LORA") != "LORA":
        raise ValueError("peft_type %r" % acfg.get("peft_type"))
    for key, ok in (("bias", "none"), ("use_dora", False), ("fan_in_fan_out", False),
                    ("layers_to_transform", None), ("layers_pattern", None)):
        if acfg.get(key, ok) != ok:
            raise ValueError("%s=%r is not supported" % (key, acfg.get(key)))
    names = [n for n, _ in net.named_modules() if n]
    m2s = [n for n in names if name_in(acfg.get("modules_to_save"), n)]
    tm = acfg.get("target_modules")
    targets = []
    for name in names:
        if not target_matches(tm, name):
            continue
        if any(name == m or name.startswith(m + ".") for m in m2s):
            raise ValueError("%s is both a LoRA target and (in) a module to save" % name)
        r, alpha, scaling = rank_alpha_scaling(acfg, name)
        _set_module(net, name, LoraLayer(net.get_submodule(name), r, alpha, scaling, acfg.get("lora_dropout", 0.0)))
        targets.append((name, r, alpha, scaling))
    if tm and not targets:
        raise ValueError("target_modules %r matches no module" % (tm,))
    return targets, m2s


def adapter_state_dict(net, targets, m2s):
    """What PEFT's save_pretrained writes: {PEFT key: tensor}."""
    out = {}
    for name, *_ in targets:
        layer = net.get_submodule(name)
        out[PREFIX + name + ".lora_A.weight"] = layer.lora_A.weight.detach().clone()
        out[PREFIX + name + ".lora_B.weight"] = layer.lora_B.weight.detach().clone()
    for name in m2s:
        for k, v in net.get_submodule(name).state_dict().items():
            out[PREFIX + name + "." + k] = v.detach().clone()
    return out


def load_adapter_tensors(net, targets, m2s, tensors):
    """Copies adapter tensors in; the key sets must be equal, shapes too."""
    want = adapter_state_dict(net, targets, m2s)
    missing, extra = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or extra:
        raise ValueError("adapter keys: missing %s, unexpected %s" % (missing, extra))
    params = dict(net.named_parameters())
    params.update(dict(net.named_buffers()))
    with torch.no_grad():
        for key, t in tensors.items():
            dst = params[key[len(PREFIX):]]
            if tuple(dst.shape) != tuple(t.shape):
                raise ValueError("%s: shape %s, model wants %s" % (key, list(t.shape), list(dst.shape)))
            dst.copy_(t.to(dst.dtype))


def read_json(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Base networks.

def _narrow_resnet_class():
    spec = importlib.util.spec_from_file_location(
        "lorafit_resnet_fixtures", os.path.join(REPO, "resnet", "testdata", "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NarrowResNet


ARCHS = {18: ("BasicBlock", [2, 2, 2, 2]), 34: ("BasicBlock", [3, 4, 6, 3]), 50: ("Bottleneck", [3, 4, 6, 3]),
         101: ("Bottleneck", [3, 4, 23, 3]), 152: ("Bottleneck", [3, 8, 36, 3])}


def load_state_dict(path):
    if path.endswith(".safetensors"):
        return read_safetensors(path)[0]
    return torch.load(path, map_location="cpu")


def base_from_state_dict(sd, arch):
    """torchvision's ResNet (stem width and class count read off sd) for an
    arch like "resnet50" (a "-wN" suffix is ignored: the width comes from sd)."""
    import torchvision.models.resnet as tvr
    if sd["conv1.weight"].shape[0] == 64 and hasattr(tvr, arch):  # torchvision's own, full size
        net = getattr(tvr, arch)(num_classes=sd["fc.weight"].shape[0])
        net.load_state_dict(sd)
        return net.eval()
    m = re.fullmatch(r"resnet(\d+)(-w\d+)?", arch)
    if not m or int(m.group(1)) not in ARCHS:
        raise ValueError("unknown arch %r" % arch)
    block, layers = ARCHS[int(m.group(1))]
    width, num_classes = sd["conv1.weight"].shape[0], sd["fc.weight"].shape[0]
    net = _narrow_resnet_class()(getattr(tvr, block), layers, width=width, num_classes=num_classes)
    net.load_state_dict(sd)
    return net.eval()


def load_adapted(base_net, adapter_dir):
    """Applies the adapter directory to base_net (modified in place; pass a
    copy). Returns (net, info) with info = {acfg, lcfg, targets, m2s,
    created, metadata, dtypes}."""
    acfg = read_json(os.path.join(adapter_dir, CONFIG_FILE))
    lcfg = read_json(os.path.join(adapter_dir, LORAFIT_FILE))
    tensors, metadata, dtypes = read_safetensors(os.path.join(adapter_dir, WEIGHTS_FILE))
    created = apply_lorafit(base_net, lcfg)
    targets, m2s = apply_lora(base_net, acfg)
    for c in created:
        if not any(c == m or c.startswith(m + ".") for m in m2s):
            raise ValueError("%s is created by lorafit.json but not in modules_to_save: its weights are not saved" % c)
    load_adapter_tensors(base_net, targets, m2s, tensors)
    base_net.eval()
    return base_net, dict(acfg=acfg, lcfg=lcfg, targets=targets, m2s=m2s, created=created,
                          metadata=metadata, dtypes=dtypes)


def densify(w, groups):
    """A grouped conv weight [out, in/G, k, k] as the ordinary conv [out, in, k,
    k] that computes the same thing: zero outside each output's group."""
    out, cg = w.shape[0], w.shape[1]
    d = torch.zeros(out, cg * groups, *w.shape[2:], dtype=w.dtype)
    og = out // groups
    for g in range(groups):
        d[g * og:(g + 1) * og, g * cg:(g + 1) * cg] = w[g * og:(g + 1) * og]
    return d


def merged_state_dict(net):
    """The plain model's state_dict with every LoRA delta merged into its base
    weight: torchvision keys (plus head.*). A grouped conv becomes dense."""
    out = {}
    layers = {n + ".base_layer.weight": m for n, m in net.named_modules() if isinstance(m, LoraLayer)}
    for k, v in net.state_dict().items():
        if ".lora_A." in k or ".lora_B." in k:
            continue
        v = v.detach().clone()
        if k in layers:
            m = layers[k]
            if getattr(m.base_layer, "groups", 1) > 1:
                v = densify(v, m.base_layer.groups)
            v = v + m.delta_weight().detach()
        out[k.replace(".base_layer.", ".")] = v
    return out


def plain_model(base_net, lcfg, state_dict):
    """base_net (modified in place) with lorafit.json's structure, no LoRA,
    loaded with a merged state_dict (a grouped conv stored dense becomes an
    ordinary conv). Returns (net, missing, unexpected)."""
    apply_lorafit(base_net, lcfg)
    for name, m in list(base_net.named_modules()):
        w = state_dict.get(name + ".weight")
        if isinstance(m, nn.Conv2d) and m.groups > 1 and w is not None and w.shape[1] == m.in_channels:
            _set_module(base_net, name, nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                                  m.padding, bias=False))
    res = base_net.load_state_dict(state_dict, strict=False)
    return base_net.eval(), list(res.missing_keys), list(res.unexpected_keys)


def zero_lora_copy(net):
    """A copy with every lora_B zeroed: the adapter minus its LoRA deltas."""
    c = copy.deepcopy(net)
    with torch.no_grad():
        for m in c.modules():
            if isinstance(m, LoraLayer):
                m.lora_B.weight.zero_()
    return c


def load_image(path, size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """What `lorafit predict` does with an N x N image: gray -> RGB, to_tensor,
    normalize; no resize."""
    import torchvision.transforms.functional as TF
    from PIL import Image
    img = Image.open(path).convert("RGB")
    if size is not None and img.size != (size, size):
        raise ValueError("%s is %dx%d, want %dx%d" % (path, img.size[0], img.size[1], size, size))
    return TF.normalize(TF.to_tensor(img), mean, std)


def rel_diff(got, want):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))
