#!/usr/bin/python3
"""What torch.nn.CrossEntropyLoss computes, for train's loss test.

    /usr/bin/python3 train/testdata/make_fixtures.py

Writes cross_entropy.json: seeded logits [N,C], integer labels, and the loss
for several label_smoothing values.
"""
import json
import os

import torch

torch.manual_seed(0)
cases = []
for n, c in [(4, 3), (8, 10)]:
    logits = torch.randn(n, c) * 3
    labels = torch.randint(0, c, (n,))
    for eps in [0.0, 0.1, 0.3]:
        loss = torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, labels)
        cases.append({"logits": logits.tolist(), "labels": labels.tolist(), "smoothing": eps, "loss": loss.item()})
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cross_entropy.json"), "w") as f:
    json.dump({"source": "torch %s" % torch.__version__, "cases": cases}, f)
