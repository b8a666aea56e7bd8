#!/usr/bin/python3
"""Regenerate the .pth fixtures for lorafit/checkpoint/pth and expected.json.

Run from anywhere with Debian's python3-torch (1.13):

    /usr/bin/python3 checkpoint/pth/testdata/make_fixtures.py

Every tensor's expectation is written independently of the Go loader: its
name, dtype (in checkpoint.DType spelling), shape, the SHA-256 of the
little-endian bytes of t.contiguous(), and, for small tensors, the values as
float64 so the Go test also checks dtype conversion.

malicious*.pth are built from raw pickle bytes and zipfile; nothing in them is
ever unpickled here. All files but the *_legacy.pth ones are byte-identical
across runs; the legacy format names storages by memory address.
"""

import hashlib
import io
import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
assert sys.byteorder == "little", "fixtures assume a little-endian machine"

DTYPES = {
    torch.float32: ("F32", torch.int32),
    torch.float16: ("F16", torch.int16),
    torch.bfloat16: ("BF16", torch.int16),
    torch.float64: ("F64", torch.int64),
    torch.int64: ("I64", torch.int64),
    torch.int32: ("I32", torch.int32),
    torch.int16: ("I16", torch.int16),
    torch.int8: ("I8", torch.int8),
    torch.uint8: ("U8", torch.uint8),
    torch.bool: ("BOOL", torch.uint8),
}


def describe(t):
    """Expectation for one tensor, computed from torch only."""
    name, same_size_int = DTYPES[t.dtype]
    c = t.detach().contiguous()
    raw = c.view(same_size_int).numpy().tobytes() if c.dim() > 0 else \
        c.reshape(1).view(same_size_int).numpy().tobytes()
    d = {
        "dtype": name,
        "shape": list(c.shape),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    if c.numel() <= 64:
        d["values"] = [float(v) for v in c.double().flatten().tolist()]
    return d


def expect(sd):
    return [dict(name=k, **describe(v)) for k, v in sd.items()]


def tiny_model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    m.train()
    m(torch.randn(2, 3, 6, 6))  # moves BN running stats; num_batches_tracked = 1
    return m


def mixed_dtypes():
    torch.manual_seed(1)
    base = torch.arange(20, dtype=torch.float32) * 0.5
    mat = torch.randn(3, 5)
    return OrderedDict([
        ("f32", torch.randn(2, 3)),
        ("f16", torch.randn(3, 2).half()),
        ("bf16", torch.randn(5).bfloat16()),
        ("f64", torch.randn(2, 2, dtype=torch.float64)),
        ("i64", torch.tensor([-(2**40), -1, 0, 7, 2**40], dtype=torch.int64)),
        ("i32", torch.tensor([[-5, 6], [2**30, -(2**31)]], dtype=torch.int32)),
        ("i16", torch.tensor([-300, 300], dtype=torch.int16)),
        ("i8", torch.tensor([-128, 5, 127], dtype=torch.int8)),
        ("u8", torch.tensor([0, 200, 255], dtype=torch.uint8)),
        ("bool", torch.tensor([True, False, True])),
        ("scalar_i64", torch.tensor(42, dtype=torch.int64)),
        ("scalar_f32", torch.tensor(-1.25)),
        ("transposed", mat.t()),                      # stride (1, 5)
        ("view_a", base[2:8].view(2, 3)),              # offset 2 into base
        ("view_b", base[10:14]),                       # offset 10, same storage
        ("every_other", base[1::2]),                   # stride 2, same storage
        ("empty", torch.zeros(0, 3)),
        ("param", torch.nn.Parameter(torch.randn(2, 2))),  # _rebuild_parameter
    ])


def save(obj, fname, **kw):
    torch.save(obj, os.path.join(HERE, fname), **kw)


def malicious_zip(fname, payload):
    """A well-formed torch zip whose data.pkl calls os.system if unpickled."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("data.pkl", payload), ("byteorder", b"little"),
                           ("version", b"3\n")]:
            # A fixed timestamp keeps the file byte-identical across runs.
            z.writestr(zipfile.ZipInfo("malicious/" + name, (2020, 1, 1, 0, 0, 0)), data)
    with open(os.path.join(HERE, fname), "wb") as f:
        f.write(buf.getvalue())


class _System:
    """Pickles as a call to os.system; pickling only records the reference."""

    def __reduce__(self):
        return (os.system, ("echo pwned >&2",))


def main():
    expected = {}

    model = tiny_model()
    sd = model.state_dict()
    save(sd, "tiny_model.pth")
    expected["tiny_model.pth"] = expect(sd)

    # Same state_dict pickled with protocol 4: FRAME, MEMOIZE, STACK_GLOBAL.
    save(sd, "tiny_model_proto4.pth", pickle_protocol=4)
    expected["tiny_model_proto4.pth"] = expect(sd)

    # A training checkpoint wrapping the weights under "state_dict".
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 3, 6, 6)).sum().backward()
    opt.step()
    save({"epoch": 3, "state_dict": sd, "optimizer": opt.state_dict(),
          "note": "trained 3 epochs"}, "wrapped.pth")
    expected["wrapped.pth"] = expect(sd)

    mixed = mixed_dtypes()
    save(mixed, "dtypes.pth")
    expected["dtypes.pth"] = expect(mixed)

    save(mixed, "dtypes_legacy.pth", _use_new_zipfile_serialization=False)
    expected["dtypes_legacy.pth"] = expect(mixed)
    save(sd, "tiny_model_legacy.pth", _use_new_zipfile_serialization=False)
    expected["tiny_model_legacy.pth"] = expect(sd)

    # Protocol 2 "GLOBAL posix system" (on Linux os.system lives in posix).
    malicious_zip("malicious.pth", pickle.dumps(_System(), protocol=2))
    # Protocol 4 STACK_GLOBAL, hidden inside an otherwise plausible dict.
    malicious_zip("malicious_proto4.pth", pickle.dumps(
        OrderedDict([("weight", 1.0), ("bias", _System())]), protocol=4))

    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
