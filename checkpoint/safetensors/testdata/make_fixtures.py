#!/usr/bin/python3
"""Fixtures for lorafit/checkpoint/safetensors, written independently of the Go code.

Debian has no python3-safetensors package (checked with `apt-cache policy
python3-safetensors` on Debian 12), and the project may only install from
Debian, so this script implements the format from its specification with the
standard library alone (struct + json). It mimics the reference (Rust/serde)
writer byte for byte:
  * tensors sorted by descending dtype alignment rank, then by name, the order
    the reference `serialize` uses;
  * compact JSON (no spaces), "__metadata__" first, only '"', '\\' and control
    characters escaped (serde_json's rules == json.dumps(ensure_ascii=False));
  * header padded with spaces to a multiple of 8 bytes; data offsets contiguous.
The reference's metadata key order is unspecified (a HashMap); here, as in the
Go writer, metadata keys are sorted.
Element bytes come from `struct` ('<e' is CPython's own IEEE half encoder, not
ours); bfloat16 is rounded to nearest even by hand and, when python3-torch is
installed, cross-checked against torch's conversion.

Usage (run from anywhere, with Debian's interpreter):

  /usr/bin/python3 checkpoint/safetensors/testdata/make_fixtures.py
      writes reference.safetensors and reference.json next to this script.
      The Go test reads the former and compares it with the latter, and checks
      that the Go writer reproduces reference.safetensors byte for byte.

  /usr/bin/python3 checkpoint/safetensors/testdata/make_fixtures.py --check-go
      reads go_written.safetensors (committed; produced by the Go writer from
      the same tensors in a different order, regenerated with
      `go test ./checkpoint/safetensors/ -run TestGoWrittenFixture -update`)
      with the independent strict parser below and asserts it holds exactly the
      expected tensors and metadata. Run it whenever go_written.safetensors
      changes.
"""

import json
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Element size and the reference's dtype rank (its enum order, which the
# reference writer sorts by, descending).
DTYPES = {
    "BOOL": (1, 0),
    "U8": (1, 1),
    "I8": (1, 2),
    "I16": (2, 5),
    "F16": (2, 7),
    "BF16": (2, 8),
    "I32": (4, 9),
    "F32": (4, 11),
    "F64": (8, 12),
    "I64": (8, 13),
}

INT_FORMATS = {"BOOL": "?", "U8": "B", "I8": "b", "I16": "h", "I32": "i", "I64": "q"}
FLOAT_FORMATS = {"F16": "e", "F32": "f", "F64": "d"}


def bf16_bits(x):
    """float -> bfloat16 bits, via float32, rounding to nearest even."""
    b = struct.unpack("<I", struct.pack("<f", x))[0]
    if (b & 0x7FFFFFFF) > 0x7F800000:  # NaN
        return (b >> 16) | 0x40
    b += 0x7FFF + ((b >> 16) & 1)
    return (b >> 16) & 0xFFFF


def encode(dtype, values):
    """Returns (bytes, the stored values as Python numbers)."""
    if dtype in INT_FORMATS:
        fmt = INT_FORMATS[dtype]
        data = struct.pack("<%d%s" % (len(values), fmt), *values)
        return data, [int(v) for v in values]
    if dtype == "BF16":
        bits = [bf16_bits(v) for v in values]
        data = struct.pack("<%dH" % len(bits), *bits)
        stored = [struct.unpack("<f", struct.pack("<I", b << 16))[0] for b in bits]
        return data, stored
    fmt = FLOAT_FORMATS[dtype]
    data = struct.pack("<%d%s" % (len(values), fmt), *values)
    stored = list(struct.unpack("<%d%s" % (len(values), fmt), data))
    return data, stored


def json_number(v):
    """JSON has no NaN/Inf: spell them as strings."""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
    return v


INF = float("inf")

# name -> (dtype, shape, values). Covers every dtype lorafit's checkpoint
# package knows, a 0-dim scalar, a zero-size tensor, float specials
# (subnormals, -0, inf, nan) and a name that needs JSON escaping.
TENSORS = {
    "base_model.model.fc.lora_A.weight": ("F32", [2, 3], [0.5, -1.25, 1e-45, -0.0, 3.4028234663852886e38, INF]),
    "base_model.model.fc.lora_B.weight": ("F32", [3, 2], [0.1, 0.2, -0.3, float("nan"), 1e-3, 7.0]),
    "empty": ("F32", [0, 3], []),
    "f64": ("F64", [2], [math.pi, -1e-310]),
    "half": ("F16", [2, 3], [1.0, -2.5, 6.103515625e-05, 5.960464477539063e-08, 65504.0, -INF]),
    "bf16": ("BF16", [2, 2], [1.0, -3.14159, 1e30, 2.0 ** -133]),
    "step": ("I64", [], [1234567890123]),
    "ids": ("I64", [4], [0, -1, 2 ** 53 + 1, -(2 ** 63)]),
    "i32": ("I32", [3], [2 ** 31 - 1, -(2 ** 31), 7]),
    "i16": ("I16", [2], [-32768, 32767]),
    "i8": ("I8", [2], [-128, 127]),
    "u8": ("U8", [3], [0, 128, 255]),
    "mask": ("BOOL", [3], [True, False, True]),
    'odd "name"\t\u00e9\x01': ("F32", [1], [42.0]),
}

METADATA = {"format": "pt", "lorafit.note": "\u00fcn\u00ef \"q\"\n"}


def reference_order(names):
    return sorted(names, key=lambda n: (-DTYPES[TENSORS[n][0]][1], n))


def serialize(order, metadata):
    header = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in order:
        dtype, shape, values = TENSORS[name]
        data, _ = encode(dtype, values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    return struct.pack("<Q", len(hb)) + hb + b"".join(blobs)


def cross_check_with_torch():
    """Ground our bf16 rounding and struct's f16 in torch's, when available."""
    try:
        import torch
    except ImportError:
        print("python3-torch not installed: skipping the torch cross-check")
        return
    for name, (dtype, shape, values) in TENSORS.items():
        tdt = {"F16": torch.float16, "BF16": torch.bfloat16}.get(dtype)
        if tdt is None:
            continue
        # F16 goes double->half directly in struct; BF16 via float32 like torch.
        src = torch.tensor(values, dtype=torch.float64 if dtype == "F16" else torch.float32)
        got = src.to(tdt).view(torch.int16).tolist()
        data, _ = encode(dtype, values)
        want = list(struct.unpack("<%dh" % len(values), data))
        assert got == want, (name, got, want)
    print("torch %s agrees on F16/BF16 bytes" % torch.__version__)


def parse_strict(blob):
    """Independent reader: returns (tensors {name: (dtype, shape, bytes)}, metadata)."""
    assert len(blob) >= 8, "short file"
    (n,) = struct.unpack("<Q", blob[:8])
    assert n <= 100_000_000 and 8 + n <= len(blob), "bad header length"
    raw = blob[8 : 8 + n]
    assert n % 8 == 0, "header not padded to 8 bytes"
    text = raw.decode("utf-8")
    assert text.startswith("{"), "header must start with {"
    assert text.rstrip(" ").endswith("}"), "only spaces may pad the header"

    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), "duplicate keys %r" % keys
        return dict(pairs)

    header = json.loads(text, object_pairs_hook=no_dups)
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        assert all(isinstance(v, str) for v in metadata.values())
    buf = blob[8 + n :]
    pos = 0
    out = {}
    for name, info in sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        dtype, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        assert begin == pos, "%r: hole or overlap" % name
        assert end - begin == math.prod(shape) * DTYPES[dtype][0], "%r: size" % name
        out[name] = (dtype, shape, buf[begin:end])
        pos = end
    assert pos == len(buf), "trailing bytes"
    return out, metadata


def check_go():
    path = os.path.join(HERE, "go_written.safetensors")
    with open(path, "rb") as f:
        tensors, metadata = parse_strict(f.read())
    assert metadata == METADATA, metadata
    assert set(tensors) == set(TENSORS), sorted(set(tensors) ^ set(TENSORS))
    for name, (dtype, shape, values) in TENSORS.items():
        data, _ = encode(dtype, values)
        assert tensors[name] == (dtype, shape, data), name
    print("ok: %s holds the expected %d tensors and metadata" % (path, len(tensors)))


def main():
    if sys.argv[1:] == ["--check-go"]:
        check_go()
        return
    if sys.argv[1:]:
        sys.exit("usage: make_fixtures.py [--check-go]")
    cross_check_with_torch()
    order = reference_order(TENSORS)
    blob = serialize(order, METADATA)
    parse_strict(blob)  # the fixture must satisfy our own strict reader
    expected = {"order": order, "metadata": METADATA, "tensors": {}}
    for name in order:
        dtype, shape, values = TENSORS[name]
        data, stored = encode(dtype, values)
        expected["tensors"][name] = {
            "dtype": dtype,
            "shape": shape,
            "data_hex": data.hex(),
            "values": [json_number(v) for v in stored],
        }
    with open(os.path.join(HERE, "reference.safetensors"), "wb") as f:
        f.write(blob)
    with open(os.path.join(HERE, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False, allow_nan=False)
        f.write("\n")
    print("wrote reference.safetensors (%d bytes) and reference.json" % len(blob))


if __name__ == "__main__":
    main()
