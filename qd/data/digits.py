"""The embedded demo's data: scikit-learn's handwritten digits (1,797 real 8x8 images, no download)."""
from __future__ import annotations

import torch

from qd.data import Splits, random_split

# what qd.tasks reads of this module without importing it (a literal: see qd.tasks.declared)
DATASETS = {"digits": {"kind": "classification", "build": "digits_splits",
                       "keys": ["split_seed", "val_fraction", "test_fraction", "train_limit"]}}

# the paper's CIFAR-10 normalisation: mean = std = 0.5 per channel, applied to [0, 1] pixels; the
# digits' pixels count ink from 0 to 16, so 16 is full intensity
MEAN = STD = 0.5
WHITE = 16


def digits_splits(spec: dict) -> Splits:
    """The 8x8 images as stored pixels (uint8 0..16; ``qd.data.Normalise`` gives the model's inputs)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.uint8).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.long)
    test, val, train = random_split(len(y), (spec["test_fraction"], spec["val_fraction"] * (1 - spec["test_fraction"])),
                                    spec["split_seed"])
    if spec.get("train_limit"):
        train = train[: spec["train_limit"]]
    meta = {"dataset": "digits", "in_channels": 1, "num_classes": 10, "image_size": 8,
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "source": "sklearn.datasets.load_digits", "normalize": {"mean": [MEAN], "std": [STD], "white": WHITE}}
    return Splits((x[train], y[train]), (x[val], y[val]), (x[test], y[test]), meta)
