#!/usr/bin/python3
"""Write resnet152_checkpoint.pkl.gz: the data.pkl that torch.save writes for
a ResNet-152 training checkpoint ({"epoch", "state_dict", "optimizer"} with
SGD momentum buffers), the biggest pickle lorafit is meant to read. The
tests check it fits the pickle limits with 10× headroom; the tensors' bytes
are not needed for that, so only the pickle is kept (gzip-compressed).

    /usr/bin/python3 checkpoint/pth/testdata/make_resnet152_pickle.py
"""

import gzip
import io
import os
import zipfile

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))

torch.manual_seed(0)
model = torchvision.models.resnet152()
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
for group in opt.param_groups:
    for p in group["params"]:
        opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
buf = io.BytesIO()
torch.save({"epoch": 90, "state_dict": model.state_dict(), "optimizer": opt.state_dict()}, buf)
with zipfile.ZipFile(buf) as z:
    (name,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
    pkl = z.read(name)
with open(os.path.join(HERE, "resnet152_checkpoint.pkl.gz"), "wb") as f:
    # mtime=0 keeps the file byte-identical across runs.
    f.write(gzip.compress(pkl, mtime=0))
print(len(pkl), "bytes of pickle")
