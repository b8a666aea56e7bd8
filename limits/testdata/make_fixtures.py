#!/usr/bin/python3
"""Regenerate the images lorafit/limits tests decode, with PIL (Debian's
python3-pil), so the Go decoders are checked against another implementation:

    /usr/bin/python3 limits/testdata/make_fixtures.py

expected.json records each file's size and, for the lossless PNGs, every
pixel as PIL decodes it (RGB triples, or gray values).
"""

import json
import os
import random

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(0)


def noise(mode, w, h, levels):
    im = Image.new(mode, (w, h))
    if mode == "RGB":
        im.putdata([tuple(rng.randrange(levels) for _ in range(3)) for _ in range(w * h)])
    else:
        im.putdata([rng.randrange(levels) for _ in range(w * h)])
    return im


expected = {}


def save(name, im, **kw):
    path = os.path.join(HERE, name)
    im.save(path, **kw)
    back = Image.open(path)
    e = {"width": back.width, "height": back.height}
    if name.endswith(".png"):
        if back.mode == "P":
            back = back.convert("RGB")
        e["pixels"] = [list(p) if isinstance(p, tuple) else p for p in back.getdata()]
    expected[name] = e


save("rgb.png", noise("RGB", 13, 7, 256))
save("gray1.png", noise("1", 64, 3, 2).convert("1"), bits=1)
save("gray16.png", noise("I;16", 5, 4, 65536))
save("palette.png", noise("RGB", 9, 9, 2).convert("P", palette=Image.ADAPTIVE, colors=4))
save("interlaced.png", noise("RGB", 17, 11, 256), interlace=1)
photo = noise("RGB", 40, 24, 256)
save("baseline.jpg", photo, quality=90)
save("progressive.jpg", photo, quality=90, progressive=True)
save("gray.jpg", photo.convert("L"), quality=90)
save("photo.gif", photo)  # a real image lorafit does not accept

with open(os.path.join(HERE, "expected.json"), "w") as f:
    f.write("{\n" + ",\n".join(json.dumps(k) + ": " + json.dumps(v, separators=(",", ":"))
                                for k, v in sorted(expected.items())) + "\n}\n")
