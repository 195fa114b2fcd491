"""CIFAR-100 from its official release or from image folders, verified before use (notes 2.3).

Where the data may be, looked for in this order under ``dataset.root``:

1. ``cifar-100-python/`` (``train``, ``test``, ``meta``): the official Python release, what
   ``torchvision.datasets.CIFAR100`` downloads, every file checked against the MD5 torchvision publishes;
2. ``cifar100/{train,test}/<class>/*.png|jpg``: an ImageFolder tree with one folder per fine class,
   named as the release's ``fine_label_names`` (labels are the alphabetical class order, as the release);
3. with ``dataset.download: true``, the official archive (MD5-checked), extracted to (1).

Labels are the 100 fine classes. Images stay uint8, normalised per batch after the crop
(``qd.data.Normalise``) with the official code's mean (0.5071, 0.4867, 0.4408) and std (0.2675,
0.2565, 0.2761). Anything missing or
corrupt raises :class:`qd.data.DataMissing` naming the folder or file and what is wrong.

Exercise it with ``pytest tests/test_cifar100.py``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from qd.data import DataMissing, Splits, with_official_test
from qd.data.cifar import read_image, verify

# what qd.tasks reads of this module without importing it (a literal: see qd.tasks.declared)
# shape: image size, classes, training images per epoch with the schema's val_fraction 0.1
DATASETS = {"cifar100": {"kind": "classification", "build": "cifar100_splits",
                         "keys": ["root", "download", "split_seed", "val_fraction", "train_limit"],
                         "sizes": [50_000, 10_000], "shape": [32, 100, 45_000]}}

# the official code's CIFAR-100 normalisation (datasets/CIFAR100.py)
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
RELEASE = "cifar-100-python"
IMAGES = "cifar100"
# MD5 of every file of the official Python release, as torchvision.datasets.CIFAR100 publishes them
RELEASE_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
# the release's fine_label_names, in label order (alphabetical)
CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FIX_RELEASE = f"Delete the folder and download the release again ({OFFICIAL_URL}), or set dataset.download: true."


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def read_release_file(folder: Path, name: str) -> dict:
    """One MD5-checked pickle of the official release."""
    path = folder / name
    if not path.exists():
        present = sorted(p.name for p in folder.iterdir())
        raise DataMissing(f"{path} is missing from the CIFAR-100 release in {folder} (it holds: "
                          f"{', '.join(present) or 'nothing'}; expected train, test and meta). {FIX_RELEASE}")
    verify(path, "md5", RELEASE_MD5[name], FIX_RELEASE)
    return _unpickle(path)


def release_split(d: dict, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and fine labels of one unpickled release file."""
    missing = [k for k in ("data", "fine_labels") if k not in d]
    if missing:
        raise DataMissing(f"{path} lacks the key(s) {', '.join(missing)}: not a CIFAR-100 release file. {FIX_RELEASE}")
    x = torch.from_numpy(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
    y = torch.tensor(d["fine_labels"], dtype=torch.long)
    return x, y


def read_release(folder: Path) -> tuple[tuple, tuple]:
    """Train and test splits of the official release in ``folder``, labels checked against the meta."""
    meta = read_release_file(folder, "meta")
    names = tuple(meta.get("fine_label_names", ()))
    if names != CLASSES:
        raise DataMissing(f"{folder / 'meta'} lists {len(names)} fine classes that differ from CIFAR-100's "
                          f"100 (first: {names[:3]}). {FIX_RELEASE}")
    return (release_split(read_release_file(folder, "train"), folder / "train"),
            release_split(read_release_file(folder, "test"), folder / "test"))


def read_class_folders(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of ``folder/<class>/*`` with the 100 CIFAR-100 class folders."""
    if not folder.is_dir():
        raise DataMissing(f"{folder} does not exist (expected one folder per CIFAR-100 class in it)")
    missing = [c for c in CLASSES if not (folder / c).is_dir()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataMissing(f"{folder} lacks {len(missing)} of the 100 CIFAR-100 class folders: {shown}")
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in CLASSES)
    if extra:
        raise DataMissing(f"{folder} holds folders that are not CIFAR-100 classes: {', '.join(extra[:10])}")
    files, labels = [], []
    for label, c in enumerate(CLASSES):
        found = sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataMissing(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    images = [read_image(p) for p in files]
    bad = [str(p) for p, im in zip(files, images) if im.shape != (32, 32, 3)]
    if bad:
        raise DataMissing(f"{len(bad)} images in {folder} are not 32x32 RGB, e.g. {bad[0]}")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.long)


def download_release(root: Path) -> None:
    """Fetch the official archive (MD5-checked) and extract it under ``root``."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(OFFICIAL_URL, str(root), md5=OFFICIAL_MD5)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DataMissing(f"could not download CIFAR-100 from {OFFICIAL_URL} into {root} ({e}). Download it by "
                          "hand and extract it there, or point tasks.<task>.dataset.root at a copy.") from e


def locate(root: Path, download: bool) -> str:
    """Which layout holds CIFAR-100 under ``root`` (``release`` or ``images``), downloading if allowed."""
    if (root / RELEASE).is_dir():
        return "release"
    if (root / IMAGES).is_dir():
        for split in ("train", "test"):
            if not (root / IMAGES / split).is_dir():
                raise DataMissing(f"{root / IMAGES} lacks its {split}/ folder (expected {IMAGES}/train/<class>/ "
                                  f"and {IMAGES}/test/<class>/)")
        return "images"
    if download:
        download_release(root)
        return "release"
    raise DataMissing(
        f"CIFAR-100 not found under {root.resolve()}. Looked for {root / RELEASE}/ (the official Python release: "
        f"train, test, meta) and {root / IMAGES}/train|test/<class>/ (image folders). Set "
        f"tasks.<task>.dataset.download: true to fetch {OFFICIAL_URL}, or set tasks.<task>.dataset.root to a "
        "folder that holds one of these.")


def load_cifar100(root: Path, download: bool) -> tuple[tuple, tuple, str]:
    """``(train, test, source)``: uint8 images and fine labels of both official splits."""
    if locate(root, download) == "release":
        return *read_release(root / RELEASE), str(root / RELEASE)
    folder = root / IMAGES
    return read_class_folders(folder / "train"), read_class_folders(folder / "test"), str(folder)


def cifar100_splits(spec: dict) -> Splits:
    """Train (minus a seeded validation share), validation and the official test set."""
    train, test, source = load_cifar100(Path(spec["root"]), spec["download"])
    meta = {"dataset": "cifar100", "in_channels": 3, "num_classes": len(CLASSES), "image_size": 32,
            "source": source, "normalize": {"mean": list(MEAN), "std": list(STD)}, "classes": list(CLASSES)}
    return with_official_test(train, test, spec, meta)
