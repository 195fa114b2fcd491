"""Image folders streamed from disk (ImageNet ILSVRC-2012 and any data in its layout; notes 2.4).

The user provides ``<root>/train/<class>/*`` and ``<root>/val/<class>/*`` (the ILSVRC-2012 archives
laid out with the usual ``valprep.sh``; class folders are the WordNet ids). Images are never held in
memory: a ``torch.utils.data.DataLoader`` with worker processes decodes and augments them on the fly.

* ``prepare_image_folder(spec, folder)`` scans the tree once (the data rule), checks it and writes an
  index (``images.csv.gz``: split, path relative to the root, label) beside the task's manifest.
  Classes are the sorted folder names, as ``torchvision.datasets.ImageFolder`` (and torchvision's
  pretrained ImageNet models) number them. Splits: ``train`` (``train/`` minus a seeded held-out
  share), ``val`` (that share, evaluated without augmentation) and ``test`` (the ``val/`` folder, the
  set the paper reports on).
* ``StreamedImageFolder(manifest, folder)`` serves the batches a task adapter asks for:
  ``train_batches(batch_size, generator)`` and ``eval_batches(split, batch_size)``.

Augmentation (the official code's ``'extended'`` recipe): RandomResizedCrop 224, horizontal flip,
ColorJitter(brightness, contrast, saturation 0.4), AlexNet-style PCA lighting noise (alphastd 0.1,
ImageNet eigenvalues and eigenvectors), ImageNet mean/std. ``'basic'`` drops the jitter and the
lighting. Evaluation: resize 256, centre crop 224, mean/std.

Reproducible and rank-independent: the order of epoch ``e`` is a seeded permutation drawn from
``(seed, e)``; each global batch of ``B`` images is split over the ``world`` ranks (rank ``r`` takes
positions ``r, r + world, ...``), so the ranks together see exactly the batch one process would; and
each image's random augmentation is seeded by ``(epoch seed, image index)``, so it is the same whatever
the number of workers or ranks. A last global batch smaller than ``world`` is dropped (every rank must
take part in each step).

Exercise it with ``pytest tests/test_imagefolder.py``.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from qd.data import DataMissing, random_split

# what qd.tasks reads of this module without importing it (a literal: see qd.tasks.declared)
# shape: image size, classes, training images per epoch with the schema's val_fraction 0.1
DATASETS = {"imagenet": {"kind": "classification", "build": "prepare_image_folder", "streamed": True,
                         "keys": ["root", "train_dir", "test_dir", "split_seed", "val_fraction", "train_limit",
                                  "image_size", "resize", "augmentation"],
                         "sizes": [1_281_167, 50_000], "shape": [224, 1000, 1_153_050]}}

INDEX = "images.csv.gz"
SPLITS = ("train", "val", "test")
# ImageNet statistics of the official code (fb.resnet.torch's): mean/std and the RGB PCA for lighting
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
LIGHTING_STD = 0.1
JITTER = 0.4
CROP, RESIZE = 224, 256
AUGMENTATIONS = ("extended", "basic")


# ---------------------------------------------------------------------------------------- transforms
class Lighting:
    """AlexNet-style PCA colour noise on a (3, H, W) tensor: add ``V (alpha * lambda)``, alpha ~ N(0, std).

    Every pixel is shifted by the same RGB offset, a random mix of the principal components of ImageNet's
    pixel colours weighted by their eigenvalues. Draws from torch's global generator, like torchvision.
    """

    def __init__(self, alphastd: float = LIGHTING_STD, eigval=PCA_EIGVAL, eigvec=PCA_EIGVEC):
        self.alphastd = alphastd
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec.to(img.dtype) @ (alpha * self.eigval).to(img.dtype)
        return img + rgb.view(3, 1, 1)

    def __repr__(self) -> str:
        return f"Lighting(alphastd={self.alphastd})"


def train_transform(augment: str = "extended", crop: int = CROP):
    """The official training pipeline on a PIL image (torchvision v1 transforms, as the code)."""
    import torchvision.transforms as T

    if augment not in AUGMENTATIONS:
        raise ValueError(f"dataset.augment must be one of {AUGMENTATIONS}, got {augment!r}")
    steps = [T.RandomResizedCrop(crop), T.RandomHorizontalFlip()]
    if augment == "extended":
        steps.append(T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER))
    steps.append(T.ToTensor())
    if augment == "extended":
        steps.append(Lighting())
    steps.append(T.Normalize(MEAN, STD))
    return T.Compose(steps)


def eval_transform(resize: int = RESIZE, crop: int = CROP):
    import torchvision.transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(MEAN, STD)])


# ---------------------------------------------------------------------------------------- scanning
def class_folders(folder: Path) -> list[str]:
    """Sorted names of the (non-hidden) class folders of ``folder``, with errors that name it."""
    if not folder.is_dir():
        raise DataMissing(f"image folder {folder} does not exist (expected one sub-folder per class holding "
                          "its images, e.g. train/n01440764/*.JPEG)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataMissing(f"image folder {folder} holds no class folders (expected {folder}/<class>/<image>)")
    return classes


def scan_split(folder: Path, classes: list[str], strict: bool) -> list[tuple[str, int]]:
    """``(path relative to folder, label)`` of every image under ``folder/<class>/``.

    ``strict``: a class folder without images is an error (training needs every class).
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    found = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, extensions=IMG_EXTENSIONS,
                         allow_empty=True)
    if not found:
        raise DataMissing(f"image folder {folder} holds no images in its {len(classes)} class folders "
                          f"(extensions {', '.join(IMG_EXTENSIONS)})")
    if strict:
        empty = sorted(set(classes) - {classes[label] for _, label in found})
        if empty:
            raise DataMissing(f"image folder {folder}: {len(empty)} class folders hold no images, e.g. "
                              f"{', '.join(empty[:5])}")
    return [(Path(p).relative_to(folder).as_posix(), label) for p, label in found]


def scan_image_folder(train: Path, test: Path) -> tuple[list[str], list, list]:
    """Classes and images of the training and test folders; both must have the same classes."""
    classes = class_folders(train)
    test_classes = class_folders(test)
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DataMissing(f"the class folders of {train} and {test} differ: {len(only_train)} only in "
                          f"{train.name}/ (e.g. {', '.join(only_train[:5]) or '-'}), {len(only_test)} only in "
                          f"{test.name}/ (e.g. {', '.join(only_test[:5]) or '-'})")
    return classes, scan_split(train, classes, strict=True), scan_split(test, classes, strict=False)


def split_folders(spec: dict) -> tuple[Path, Path]:
    """The training and test folders a ``dataset`` block names (``root``/train and ``root``/val by default)."""
    root = Path(spec["root"]).expanduser()
    train = Path(spec.get("train_dir") or root / "train")
    test = Path(spec.get("test_dir") or root / "val")
    return train, test


def prepare_image_folder(spec: dict, folder: Path) -> dict:
    """Scan the image folders of a ``dataset`` block and write the index into ``folder``; return the manifest.

    Keys read: ``root`` (holding ``train/`` and ``val/``; or ``train_dir`` / ``test_dir``), ``val_fraction``
    (share of ``train/`` held out as ``val``, seeded by ``split_seed``; 0 = none), ``train_limit``,
    ``image_size`` (crop, 224), ``resize`` (256), ``augmentation`` (``extended`` or ``basic``).
    """
    augment = spec.get("augmentation", "extended")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"dataset.augmentation must be one of {AUGMENTATIONS}, got {augment!r}")
    train_dir, test_dir = split_folders(spec)
    classes, train, test = scan_image_folder(train_dir, test_dir)
    fraction = spec.get("val_fraction") or 0.0
    val_idx, train_idx = random_split(len(train), (fraction,), spec.get("split_seed", 0))
    train_idx = train_idx.sort().values  # keep folder order inside each split
    if spec.get("train_limit"):
        train_idx = train_idx[: spec["train_limit"]]
    rows = [("train", *train[i]) for i in train_idx.tolist()]
    rows += [("val", *train[i]) for i in val_idx.sort().values.tolist()]
    rows += [("test", *t) for t in test]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_index(rows, folder / INDEX)
    crop = spec.get("image_size") or CROP
    return {
        "dataset": spec.get("name", "imagenet"), "streamed": True, "index": INDEX,
        "folders": {"train": str(train_dir.resolve()), "test": str(test_dir.resolve())},
        "classes": classes, "in_channels": 3, "num_classes": len(classes), "image_size": crop,
        "resize": spec.get("resize") or RESIZE, "augment": augment,
        "sizes": {s: sum(r[0] == s for r in rows) for s in SPLITS},
        "normalize": {"mean": list(MEAN), "std": list(STD)}, "source": str(train_dir.parent.resolve()),
    }


def write_index(rows: list[tuple[str, str, int]], path: Path) -> None:
    from qd.io import atomic_write_bytes

    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(("split", "path", "label"))
    w.writerows(rows)
    atomic_write_bytes(gzip.compress(text.getvalue().encode(), mtime=0), path)


def read_index(path: Path) -> dict[str, tuple[list[str], torch.Tensor]]:
    """``{split: (relative paths, labels)}`` of an index written by :func:`prepare_image_folder`."""
    if not path.exists():
        raise DataMissing(f"image index {path} does not exist; run the workflow's data rule (or 'qd data') first")
    out = {s: ([], []) for s in SPLITS}
    with gzip.open(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            paths, labels = out[row["split"]]
            paths.append(row["path"])
            labels.append(int(row["label"]))
    return {s: (p, torch.tensor(lab, dtype=torch.long)) for s, (p, lab) in out.items()}


# ---------------------------------------------------------------------------------------- sampling
def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for epoch ``epoch`` of a run seeded ``seed`` (numpy's SeedSequence mixes the pair)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def sample_seeds(seed: int, indices: np.ndarray) -> np.ndarray:
    """Independent 63-bit seeds for the images ``indices`` in an epoch seeded ``seed`` (splitmix64)."""
    def mix(x):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    with np.errstate(over="ignore"):
        return mix(mix(np.asarray(indices, dtype=np.uint64)) ^ np.uint64(seed)) >> np.uint64(1)


def global_batches(n: int, batch_size: int, seed: int, world: int = 1) -> list[np.ndarray]:
    """Positions ``0..n-1`` in a seeded order, cut into global batches; a last batch smaller than ``world``
    is dropped, so each rank has a part of every batch."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    parts = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if parts and len(parts[-1]) < world:
        parts.pop()
    return parts


class EpochShardSampler:
    """Batch sampler: this rank's part of each global batch of an epoch, as ``(index, seed)`` pairs.

    ``batch_size`` is the *global* batch; rank ``r`` of ``world`` takes every ``world``-th image of it,
    so the union over ranks is the batch one process would draw. The order and the images' seeds depend
    only on ``(seed, epoch)``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int = 0, rank: int = 0, world: int = 1):
        if batch_size < world:
            raise ValueError(f"global batch size {batch_size} is smaller than the world size {world}: "
                             "every rank needs at least one image per step")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside 0..{world - 1}")
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed = epoch_seed(seed, epoch)

    def __iter__(self):
        for batch in global_batches(self.n, self.batch_size, self.seed, self.world):
            mine = batch[self.rank::self.world]
            yield list(zip(mine.tolist(), sample_seeds(self.seed, mine).tolist()))

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (rest >= self.world)


# ---------------------------------------------------------------------------------------- streaming
class ImageFiles(Dataset):
    """Image files decoded on access; an item is an index (evaluation) or ``(index, seed)`` (training,
    the augmentation drawn from a generator seeded with ``seed``)."""

    def __init__(self, root: Path, paths: list[str], labels: torch.Tensor, transform):
        self.root, self.paths, self.labels, self.transform = Path(root), paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, None)
        path = self.root / self.paths[index]
        try:
            from torchvision.datasets.folder import default_loader

            image = default_loader(str(path))
        except (OSError, ValueError) as e:
            raise DataMissing(f"cannot read image {path}: {e}") from e
        if seed is None:
            return self.transform(image), self.labels[index]
        with torch.random.fork_rng(devices=[]):  # leave the caller's generator alone (workers=0)
            torch.manual_seed(seed)
            return self.transform(image), self.labels[index]


class StreamedImageFolder:
    """The prepared image folders of a task as batches for its adapter (see ``qd/tasks/base.py``).

    ``rank`` and ``world`` shard training batches for DDP (``train_batches``'s ``batch_size`` is the global
    batch); ``workers`` decode in parallel; ``pin_memory`` speeds up copies to a GPU.
    """

    def __init__(self, manifest: dict, folder: Path, rank: int = 0, world: int = 1, workers: int = 4,
                 pin_memory: bool = False):
        self.manifest, self.folder = manifest, Path(folder)
        self.rank, self.world, self.workers, self.pin_memory = rank, world, workers, pin_memory
        self.index = read_index(self.folder / manifest["index"])
        for split, (paths, _) in self.index.items():
            if len(paths) != manifest["sizes"][split]:
                raise DataMissing(f"{self.folder / manifest['index']} lists {len(paths)} {split} images but the "
                                  f"manifest {manifest['sizes'][split]}: prepare the data again")
        roots = manifest["folders"]
        self.roots = {"train": Path(roots["train"]), "val": Path(roots["train"]), "test": Path(roots["test"])}
        crop, resize = manifest["image_size"], manifest["resize"]
        self.transforms = {"train": train_transform(manifest["augment"], crop), "eval": eval_transform(resize, crop)}

    @classmethod
    def from_prepared(cls, folder: Path, **kw) -> "StreamedImageFolder":
        path = Path(folder) / "manifest.json"
        if not path.exists():
            raise DataMissing(f"prepared dataset {path} does not exist; run the workflow's data rule first")
        return cls(json.loads(path.read_text()), folder, **kw)

    @property
    def meta(self) -> dict:
        return {k: self.manifest[k] for k in ("dataset", "in_channels", "num_classes", "image_size", "sizes",
                                              "normalize", "source")}

    def dataset(self, split: str, train: bool = False) -> ImageFiles:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
        paths, labels = self.index[split]
        return ImageFiles(self.roots[split], paths, labels, self.transforms["train" if train else "eval"])

    def _loader(self, dataset, batch_sampler) -> DataLoader:
        # the loader's own generator (its workers' base seed; every draw that matters is seeded per
        # image) keeps it from consuming the caller's global generator
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.workers,
                          pin_memory=self.pin_memory, generator=torch.Generator().manual_seed(self.rank))

    # ------------------------------------------------------------------ what an adapter calls
    def train_epoch(self, batch_size: int, seed: int, epoch: int = 0) -> DataLoader:
        """This rank's augmented training batches of epoch ``epoch`` (order from ``(seed, epoch)``)."""
        data = self.dataset("train", train=True)
        return self._loader(data, EpochShardSampler(len(data), batch_size, seed, epoch, self.rank, self.world))

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """One epoch of ``(images, labels)`` batches; the epoch's seed is one draw from ``generator``.

        The engine's generator advances once per epoch and is checkpointed, so epoch ``e``'s order is a
        function of the run's seed and ``e``, identical on every rank, and a resumed run draws the same.
        """
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return iter(self.train_epoch(batch_size, seed))

    def n_train_batches(self, batch_size: int) -> int:
        full, rest = divmod(len(self.index["train"][0]), batch_size)
        return full + (rest >= self.world)

    def eval_batches(self, split: str, batch_size: int, shard: bool = False):
        """Batches of ``split`` in index order, unaugmented; ``shard`` gives this rank a contiguous share
        (the ranks' shares in rank order are the whole split)."""
        data = self.dataset(split)
        positions = np.arange(len(data))
        if shard:
            positions = np.array_split(positions, self.world)[self.rank]
        batches = [positions[i:i + batch_size].tolist() for i in range(0, len(positions), batch_size)]
        return iter(self._loader(data, batches))
