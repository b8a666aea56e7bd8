#!/usr/bin/python3
"""What torch.nn.CrossEntropyLoss computes, for train's loss test.

    /usr/bin/python3 train/testdata/make_fixtures.py

Writes cross_entropy.json: seeded logits [N,C], integer labels, and the loss
for several label_smoothing values; and optimizer.json: a weight's trajectory
under torch.optim Adam, AdamW and SGD(momentum) for given gradients and a
changing learning rate (as a schedule sets it).
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

torch.manual_seed(1)
w0 = torch.randn(3, 4)
grads = [torch.randn(3, 4) for _ in range(5)]
lrs = [1e-2, 8e-3, 5e-3, 3e-3, 1e-3]
runs = []
for name, make in [
    ("adam", lambda p: torch.optim.Adam([p], lr=lrs[0])),
    ("adam_wd", lambda p: torch.optim.Adam([p], lr=lrs[0], weight_decay=0.01)),
    ("adamw", lambda p: torch.optim.AdamW([p], lr=lrs[0], weight_decay=0.01)),
    ("sgd", lambda p: torch.optim.SGD([p], lr=lrs[0], momentum=0.9, weight_decay=0.01)),
]:
    p = torch.nn.Parameter(w0.clone())
    opt = make(p)
    traj = []
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = g.clone()
        opt.step()
        traj.append(p.detach().reshape(-1).tolist())
    opt_name = name.split("_")[0]
    wd = opt.param_groups[0]["weight_decay"]
    runs.append({"name": name, "optimizer": opt_name, "weight_decay": wd, "momentum": 0.9, "trajectory": traj})
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimizer.json"), "w") as f:
    json.dump({"source": "torch %s" % torch.__version__, "w0": w0.reshape(-1).tolist(),
               "grads": [g.reshape(-1).tolist() for g in grads], "lrs": lrs, "runs": runs}, f)
