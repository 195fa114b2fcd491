"""Datasets as prepared tensors: ``prepare`` writes one file per task, ``load_splits`` reads it back.

Each dataset is a module under qd/data/ that declares itself (``DATASETS = {name: {...}}``, read by
``qd.tasks.datasets`` without importing it): a new dataset of an existing kind needs no other edit.
A prepared file holds the train / val / test tensors (uint8 pixels, integer labels) and the
dataset's shape and normalisation, so training jobs never touch the raw data or its loaders'
dependencies. ``load_splits`` hands back normalised images; a training run keeps its training set as the
stored pixels (``load_prepared``), crops them and normalises each batch (``Normalise``).

Try: ``qd data --config config/config.yaml --task digits --out /tmp/digits.pt``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qd.errors import DataMissing

@dataclass
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    meta: dict

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, name)


def random_split(n: int, fractions: tuple[float, ...], seed: int) -> list[torch.Tensor]:
    """Index sets for consecutive shares of a seeded permutation of ``range(n)`` (the rest last)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = [round(f * n) for f in fractions]
    parts, start = [], 0
    for s in sizes:
        parts.append(perm[start:start + s])
        start += s
    parts.append(perm[start:])
    return parts


def with_official_test(train: tuple, test: tuple, spec: dict, meta: dict) -> Splits:
    """The splits of a dataset with an official test set: a seeded ``val_fraction`` of the training set
    held out (0 = none), the rest trained on (the first ``train_limit`` of it, if set)."""
    x, y = train
    val, keep = random_split(len(y), (spec["val_fraction"],), spec["split_seed"])
    if spec.get("train_limit"):
        keep = keep[: spec["train_limit"]]
    meta = {**meta, "sizes": {"train": len(keep), "val": len(val), "test": len(test[1])}}
    return Splits((x[keep], y[keep]), (x[val], y[val]), test, meta)


def prepare(spec: dict) -> Splits:
    """Build the splits a task's ``dataset`` block describes (the datasets held in memory): the module
    under qd/data/ that declares the dataset in its ``DATASETS`` builds them (``qd.tasks.datasets``)."""
    from qd.tasks import dataset_builder

    return dataset_builder(spec["name"], spec.get("kind"))(spec)


def save_splits(splits: Splits, path: str | Path) -> None:
    from qd.io import atomic_save

    atomic_save({"train": splits.train, "val": splits.val, "test": splits.test, "meta": splits.meta}, path)


def load_prepared(path: str | Path) -> Splits:
    """The splits as stored: images as uint8 pixels (float images in files written before the digits
    were stored as pixels, which need no normalisation)."""
    path = Path(path)
    if not path.exists():
        raise DataMissing(f"prepared dataset {path} does not exist; run the workflow's data rule "
                          f"(snakemake {path}) or 'qd data' first")
    d = torch.load(path, weights_only=True)
    return Splits(d["train"], d["val"], d["test"], d["meta"])


def load_splits(path: str | Path) -> Splits:
    """The splits with their images normalised (the model's inputs)."""
    splits = load_prepared(path)
    normalise = Normalise(splits.meta)
    return Splits(*((normalise(x), y) for x, y in (splits.train, splits.val, splits.test)), splits.meta)


class Normalise:
    """Stored pixels to model inputs: ``(x / white - mean) / std`` per channel, ``white`` being the
    stored value of full intensity (``meta["normalize"]["white"]``: 255 unless the dataset says, 16 for
    the digits). Applied to a batch after its crop, so the crop's padding is black, as in the official
    loaders (``qd.data.augment``). Float images are taken as normalised already."""

    def __init__(self, meta: dict, device: torch.device | str = "cpu"):
        n = meta.get("normalize")
        self.dataset = meta.get("dataset", "the dataset")
        self.white = n.get("white", 255) if n else None
        self.mean = torch.tensor(n["mean"], device=device).view(1, -1, 1, 1) if n else None
        self.std = torch.tensor(n["std"], device=device).view(1, -1, 1, 1) if n else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        if self.white is None:
            raise ValueError(f"prepared {self.dataset} holds uint8 images but its meta has no 'normalize' "
                             "(mean, std): prepare the data again")
        return (x.float() / self.white - self.mean) / self.std


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    """Minibatches of ``(x, y)``, shuffled with ``generator`` when one is given."""
    n = len(y)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]
