"""Pretrained ImageNet teachers: torchvision's ``IMAGENET1K_V1`` weights (notes 2.4, Table D).

The paper's teachers are torchvision's pretrained ResNet-34 (73.31% top-1) and ResNet-50 (76.13%), the
numbers of the ``IMAGENET1K_V1`` weights. ``ResNet50_Weights.DEFAULT`` is now ``IMAGENET1K_V2`` (80.86%),
a different teacher, so the weights are named explicitly here and never taken as ``DEFAULT``.

Weights come from a local file (``path``: the ``.pth`` file, or a folder holding it under torchvision's
own file name) or, with ``download=True``, from torchvision's URL into that folder (default: torch hub's
cache, where torchvision itself keeps them). torchvision's file names carry the first hex digits of the
file's SHA-256 (``resnet34-b627a593.pth``); the file is checked against them, and its full SHA-256 is
returned for the run's record. Width 1 of ``qd.models.resnet.resnet`` is torchvision's model exactly,
so the state dict loads strictly.

Exercise it with ``pytest tests/test_pretrained.py``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from qd.errors import DataMissing

URL_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class PretrainedWeights:
    depth: int
    weights: str  # torchvision's enum member, e.g. "ResNet34_Weights.IMAGENET1K_V1"
    file: str  # torchvision's file name: <arch>-<first hex digits of the SHA-256>.pth
    top1: float  # torchvision's published ImageNet-1K accuracies of these weights (%)
    top5: float

    @property
    def url(self) -> str:
        return URL_BASE + self.file

    @property
    def hash_prefix(self) -> str:
        return self.file.rsplit("-", 1)[1].split(".")[0]


# torch-free: the workflow reads the names
TEACHERS = {
    "resnet18": PretrainedWeights(18, "ResNet18_Weights.IMAGENET1K_V1", "resnet18-f37072fd.pth", 69.758, 89.078),
    "resnet34": PretrainedWeights(34, "ResNet34_Weights.IMAGENET1K_V1", "resnet34-b627a593.pth", 73.314, 91.42),
    "resnet50": PretrainedWeights(50, "ResNet50_Weights.IMAGENET1K_V1", "resnet50-0676ba61.pth", 76.13, 92.862),
}


def pretrained_weights(name: str) -> PretrainedWeights:
    if name not in TEACHERS:
        raise ValueError(f"no pretrained weights for {name!r}; known: {', '.join(TEACHERS)}")
    return TEACHERS[name]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_folder() -> Path:
    """torch hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), shared with torchvision."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_path(spec: PretrainedWeights, path: str | Path | None) -> Path:
    """The weights file ``path`` names: the file itself, or torchvision's file name inside a folder."""
    p = Path(path).expanduser() if path is not None else default_folder()
    is_folder = p.is_dir() or (not p.exists() and p.suffix not in (".pth", ".pt"))
    return p / spec.file if is_folder else p


def fetch(spec: PretrainedWeights, dest: Path, check_hash: bool) -> None:
    """Download ``spec``'s file from torchvision's URL to ``dest`` (hash-checked while writing)."""
    import torch.hub

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(spec.url, str(dest), spec.hash_prefix if check_hash else None,
                                       progress=False)
    except Exception as e:  # network and hash errors: the user's remedy is the same
        raise DataMissing(f"could not download {spec.weights} from {spec.url} to {dest} ({e}). Download it by "
                          "hand and point the teacher's weights path at the file.") from e


def load_pretrained(name: str, path: str | Path | None = None, download: bool = False,
                    check_hash: bool = True):
    """``(model, record)``: ``qd.models.resnet.resnet(depth)`` holding torchvision's V1 weights.

    ``record`` names the weights and their file and holds its SHA-256 and torchvision's published
    accuracies. ``check_hash=False`` accepts a file that is not torchvision's (e.g. one saved locally).
    """
    import torch

    from qd.models.resnet import resnet

    spec = pretrained_weights(name)
    file = weights_path(spec, path)
    if not file.exists():
        if not download:
            raise DataMissing(f"weights file {file} for the pretrained {name} teacher ({spec.weights}) does not "
                              f"exist. Download {spec.url} there, or allow the download (download: true).")
        fetch(spec, file, check_hash)
    digest = sha256(file)
    if check_hash and not digest.startswith(spec.hash_prefix):
        raise DataMissing(f"{file} is not torchvision's {spec.weights}: its SHA-256 begins {digest[:8]}, expected "
                          f"{spec.hash_prefix}. Delete it and download {spec.url} again.")
    state = torch.load(file, map_location="cpu", weights_only=True)
    model = resnet(spec.depth)
    missing, unexpected = model_keys_mismatch(model.state_dict(), state)
    if missing or unexpected:
        raise DataMissing(f"{file} does not hold ResNet-{spec.depth} weights: {len(missing)} missing keys "
                          f"(e.g. {', '.join(missing[:3]) or '-'}), {len(unexpected)} unexpected "
                          f"(e.g. {', '.join(unexpected[:3]) or '-'})")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # same names, other shapes
        raise DataMissing(f"{file} does not fit ResNet-{spec.depth}: {e}") from e
    record = {"name": name, "weights": spec.weights, "url": spec.url, "file": str(file), "sha256": digest,
              "published_top1": spec.top1, "published_top5": spec.top5}
    return model, record


def model_keys_mismatch(expected: dict, got: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
