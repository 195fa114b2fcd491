"""CIFAR-10 from its official release or from image folders, verified before use.

Where the data may be, looked for in this order under ``dataset.root``:

1. ``cifar-10-batches-py/``: the official Python release (what ``torchvision.datasets.CIFAR10``
   downloads), every file checked against its published MD5;
2. ``cifar10/{train,test}/<class>/*.jpg|png``: an ImageFolder tree of image files;
3. ``cifar10-jpeg.tar.gz``: an archive of that tree, checked against its SHA-256 and read through a
   temporary extraction (the data root may be read-only);
4. with ``dataset.download: true``, the official archive from the University of Toronto, checked
   against its MD5 and extracted to (1).

Anything missing or corrupt raises :class:`qd.data.DataMissing` naming the file, where the suite
looked and how to get the data. Images are kept as uint8: a training run keeps them so on its device
and normalises each batch after its crop (``qd.data.Normalise``), ``load_splits`` normalises them all.
"""
from __future__ import annotations

import hashlib
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from qd.data import DataMissing, Splits, with_official_test

# what qd.tasks reads of this module without importing it (a literal: see qd.tasks.declared)
DATASETS = {"cifar10": {"kind": "classification", "build": "cifar10_splits",
                        "keys": ["root", "download", "split_seed", "val_fraction", "train_limit"],
                        "sizes": [50_000, 10_000]}}

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# the paper's CIFAR-10 normalisation (official code): mean = std = 0.5 per channel
MEAN = STD = (0.5, 0.5, 0.5)
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCHES = "cifar-10-batches-py"
# published MD5 of every file of the official Python release
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
IMAGE_ARCHIVE = "cifar10-jpeg.tar.gz"
IMAGE_ARCHIVE_SHA256 = "cb6c50520509605d4bd1856cb7eaba797dabcec3c19d93ce945b0ec1aee34a5f"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, algorithm: str, expected: str, how_to_fix: str) -> None:
    """Raise :class:`DataMissing` when ``path``'s digest differs from ``expected``."""
    got = file_digest(path, algorithm)
    if got != expected:
        raise DataMissing(f"{path} is corrupt: its {algorithm} is {got}, expected {expected}. {how_to_fix}")


def read_batches(folder: Path, names: list[str], checksums: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels from pickled batches of the official release."""
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.exists():
            raise DataMissing(f"{path} is missing from the CIFAR-10 release in {folder}; delete the folder and "
                              f"download again ({OFFICIAL_URL})")
        verify(path, "md5", checksums[name], f"Delete {folder} and download again ({OFFICIAL_URL}).")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
        xs.append(torch.tensor(d["data"], dtype=torch.uint8).view(-1, 3, 32, 32))
        ys.append(torch.tensor(d["labels"], dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of ``folder/<class>/*.jpg|png`` with the ten CIFAR-10 class names."""
    missing = [c for c in CLASSES if not (folder / c).is_dir()]
    if missing:
        raise DataMissing(f"{folder} lacks the class folders {', '.join(missing)} (expected one folder per class: "
                          f"{', '.join(CLASSES)})")
    files, labels = [], []
    for label, c in enumerate(CLASSES):
        found = sorted(p for p in (folder / c).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files += found
        labels += [label] * len(found)
    images = [read_image(p) for p in files]
    bad = [str(p) for p, im in zip(files, images) if im.shape != (32, 32, 3)]
    if bad:
        raise DataMissing(f"{len(bad)} images in {folder} are not 32x32 RGB, e.g. {bad[0]}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.long)


def read_image(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 array (Pillow comes with torchvision)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_image_archive(archive: Path) -> tuple[tuple, tuple]:
    """Train and test images of an archive of the image-folder tree, extracted to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        folder = Path(tmp) / "cifar10"
        return read_image_folder(folder / "train"), read_image_folder(folder / "test")


def download_official(root: Path, url: str = OFFICIAL_URL, md5: str = OFFICIAL_MD5) -> None:
    """Fetch the official archive (MD5-checked) and extract it under ``root``."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(url, str(root), md5=md5)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DataMissing(f"could not download CIFAR-10 from {url} into {root} ({e}). "
                          f"Download it by hand and extract it there, or point tasks.<task>.dataset.root at a copy.") from e


def locate(root: Path, download: bool) -> str:
    """Which layout holds CIFAR-10 under ``root`` (fetching or extracting it if needed)."""
    if (root / BATCHES).is_dir():
        return "release"
    if (root / "cifar10" / "train").is_dir() and (root / "cifar10" / "test").is_dir():
        return "images"
    if (root / IMAGE_ARCHIVE).exists():
        verify(root / IMAGE_ARCHIVE, "sha256", IMAGE_ARCHIVE_SHA256, "Replace the archive with a good copy.")
        return "archive"
    if download:
        download_official(root)
        return "release"
    raise DataMissing(
        f"CIFAR-10 not found under {root.resolve()}. Looked for {root / BATCHES}/ (the official Python release), "
        f"{root / 'cifar10'}/train|test/<class>/ (image folders) and {root / IMAGE_ARCHIVE}. "
        f"Set tasks.<task>.dataset.download: true to fetch {OFFICIAL_URL}, or set tasks.<task>.dataset.root "
        "to a folder that holds one of these.")


def load_cifar10(root: Path, download: bool) -> tuple[tuple, tuple, str]:
    layout = locate(root, download)
    if layout == "release":
        folder = root / BATCHES
        train = read_batches(folder, [f"data_batch_{i}" for i in range(1, 6)], BATCH_MD5)
        test = read_batches(folder, ["test_batch"], BATCH_MD5)
        return train, test, str(folder)
    if layout == "archive":
        return *read_image_archive(root / IMAGE_ARCHIVE), str(root / IMAGE_ARCHIVE)
    folder = root / "cifar10"
    return read_image_folder(folder / "train"), read_image_folder(folder / "test"), str(folder)


def cifar10_splits(spec: dict) -> Splits:
    """Train (minus a seeded validation share), validation and the official test set."""
    train, test, source = load_cifar10(Path(spec["root"]), spec["download"])
    meta = {"dataset": "cifar10", "in_channels": 3, "num_classes": 10, "image_size": 32, "source": source,
            "normalize": {"mean": list(MEAN), "std": list(STD)}, "classes": list(CLASSES)}
    return with_official_test(train, test, spec, meta)
