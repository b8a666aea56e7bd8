#!/usr/bin/python3
"""Fixtures for lorafit's image preprocessing, made by torchvision itself.

    /usr/bin/python3 preprocess/testdata/make_fixtures.py

Writes small PNGs and, for each, what torchvision's ImageClassification preset
(the transforms attached to its ResNet weights) produces: rgb.png (41x29 RGB,
resized and cropped). gray.png (16x16 grayscale) is already crop-sized, which
lorafit uses without resampling: its expected values are torchvision's
to_tensor + normalize of the image replicated to 3 channels.
"""
import json
import os

import numpy as np
import torch
from PIL import Image
import torchvision.transforms.functional as F
from torchvision.transforms._presets import ImageClassification

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)
out = {}

rgb = Image.fromarray(rng.integers(0, 256, (29, 41, 3), dtype=np.uint8), "RGB")
rgb.save(os.path.join(HERE, "rgb.png"))
t = ImageClassification(crop_size=16, resize_size=18)(rgb)
out["rgb.png"] = {"crop": 16, "resize": 18, "values": t.reshape(-1).tolist()}

gray = Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L")
gray.save(os.path.join(HERE, "gray.png"))
# Already crop x crop: lorafit uses it as is, i.e. only to_tensor + normalize.
t = F.normalize(F.to_tensor(gray.convert("RGB")), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
out["gray.png"] = {"crop": 16, "resize": 18, "values": t.reshape(-1).tolist()}

out["source"] = "torchvision %s ImageClassification preset, PIL %s" % (
    __import__("torchvision").__version__, Image.__version__)
with open(os.path.join(HERE, "expected.json"), "w") as f:
    json.dump(out, f)
