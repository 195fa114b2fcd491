"""CIFAR-100 reader (qd/data/cifar100.py) on tiny generated data: the official pickle release (with its
checksums swapped for the generated files' own) and the image-folder layout, plus every malformed case's
message."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import qd.data.cifar100 as c100
from qd.data import DataMissing, Splits, load_splits, save_splits

SPEC = {"name": "cifar100", "download": False, "val_fraction": 0.25, "split_seed": 0}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_release(root: Path, n_train=12, n_test=5, seed=0, classes=c100.CLASSES) -> dict:
    """A release in the official format: pickled dicts with 'data' (N, 3072) uint8 rows (R, G, B planes)."""
    rng = np.random.default_rng(seed)
    folder = root / c100.RELEASE
    folder.mkdir(parents=True)
    made = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        d = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
             "fine_labels": fine, "coarse_labels": [f // 5 for f in fine], "data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
        made[name] = (data, fine)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(classes), "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    return made


@pytest.fixture
def release(tmp_path, monkeypatch):
    made = write_release(tmp_path)
    folder = tmp_path / c100.RELEASE
    monkeypatch.setattr(c100, "RELEASE_MD5", {n: _md5(folder / n) for n in ("train", "test", "meta")})
    return tmp_path, made


def test_checksums_are_torchvisions():
    from torchvision.datasets import CIFAR100

    published = {name: md5 for name, md5 in CIFAR100.train_list + CIFAR100.test_list}
    published["meta"] = CIFAR100.meta["md5"]
    assert c100.RELEASE_MD5 == published
    assert (c100.OFFICIAL_URL, c100.OFFICIAL_MD5, c100.RELEASE) == (CIFAR100.url, CIFAR100.tgz_md5,
                                                                    CIFAR100.base_folder)
    assert len(c100.CLASSES) == 100 and list(c100.CLASSES) == sorted(c100.CLASSES)


def test_release_is_read_as_uint8_images_and_fine_labels(release):
    root, made = release
    splits = c100.cifar100_splits({**SPEC, "root": str(root)})
    assert isinstance(splits, Splits)
    data, fine = made["train"]
    # 12 training images: 3 held out (25%), 9 kept, disjoint and together the whole split
    assert [len(splits.train[1]), len(splits.val[1]), len(splits.test[1])] == [9, 3, 5]
    assert splits.meta["classes"][:3] == ["apple", "aquarium_fish", "baby"] and len(splits.meta["classes"]) == 100
    x_all = torch.cat([splits.train[0], splits.val[0]])
    y_all = torch.cat([splits.train[1], splits.val[1]])
    assert x_all.dtype == torch.uint8 and x_all.shape[1:] == (3, 32, 32)
    # each kept image is a row of the release reshaped channel-major, with its own fine label
    rows = {bytes(r): lab for r, lab in zip(data, fine)}
    assert all(rows[bytes(x.reshape(-1).numpy())] == int(y) for x, y in zip(x_all, y_all))
    assert len({bytes(x.reshape(-1).numpy()) for x in x_all}) == 12
    tx, ty = splits.test
    assert torch.equal(tx, torch.from_numpy(made["test"][0]).view(-1, 3, 32, 32))
    assert ty.tolist() == made["test"][1]
    assert splits.meta["num_classes"] == 100 and splits.meta["dataset"] == "cifar100"
    assert splits.meta["normalize"] == {"mean": [0.5071, 0.4867, 0.4408], "std": [0.2675, 0.2565, 0.2761]}


def test_normalised_at_load_with_the_official_mean_and_std(release, tmp_path):
    root, made = release
    splits = c100.cifar100_splits({**SPEC, "root": str(root)})
    save_splits(splits, tmp_path / "split.pt")
    loaded = load_splits(tmp_path / "split.pt")
    raw = splits.test[0][2, 1, 5, 7].item()  # image 2, green channel
    assert loaded.test[0][2, 1, 5, 7].item() == pytest.approx((raw / 255 - 0.4867) / 0.2565, abs=1e-6)
    assert loaded.test[0].dtype == torch.float32


def test_split_is_seeded_and_train_limit(release):
    root, _ = release
    a = c100.cifar100_splits({**SPEC, "root": str(root)})
    b = c100.cifar100_splits({**SPEC, "root": str(root)})
    c = c100.cifar100_splits({**SPEC, "root": str(root), "split_seed": 1})
    assert torch.equal(a.val[0], b.val[0]) and not torch.equal(a.val[0], c.val[0])
    assert len(c100.cifar100_splits({**SPEC, "root": str(root), "train_limit": 4}).train[1]) == 4


def test_corrupt_and_missing_release_files(tmp_path, monkeypatch):
    write_release(tmp_path)
    folder = tmp_path / c100.RELEASE
    good = {n: _md5(folder / n) for n in ("train", "test", "meta")}
    monkeypatch.setattr(c100, "RELEASE_MD5", good)
    with open(folder / "train", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataMissing, match=r"train is corrupt: its md5"):
        c100.load_cifar100(tmp_path, download=False)
    (folder / "train").unlink()
    with pytest.raises(DataMissing, match=r"train is missing from the CIFAR-100 release") as e:
        c100.load_cifar100(tmp_path, download=False)
    assert str(folder) in str(e.value) and "meta, test" in str(e.value)


def test_torchvisions_checksums_reject_a_file_that_is_not_the_release(tmp_path):
    write_release(tmp_path)  # real checksums: the generated meta cannot match
    with pytest.raises(DataMissing, match=r"meta is corrupt.*expected 7973b15100ade9c7d40fb424638fde48"):
        c100.load_cifar100(tmp_path, download=False)


def test_wrong_class_names_in_meta(tmp_path, monkeypatch):
    write_release(tmp_path, classes=[f"k{i}" for i in range(100)])
    folder = tmp_path / c100.RELEASE
    monkeypatch.setattr(c100, "RELEASE_MD5", {n: _md5(folder / n) for n in ("train", "test", "meta")})
    with pytest.raises(DataMissing, match="fine classes that differ"):
        c100.load_cifar100(tmp_path, download=False)


def write_folders(root: Path, per_class=(1, 1), size=32, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    made = {}
    for split, n in zip(("train", "test"), per_class):
        for c in c100.CLASSES:
            d = root / c100.IMAGES / split / c
            d.mkdir(parents=True)
            for i in range(n):
                im = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(im).save(d / f"{i}.png")
                made[split, c, i] = im
    return made


def test_image_folders(tmp_path):
    made = write_folders(tmp_path, per_class=(2, 1))
    splits = c100.cifar100_splits({**SPEC, "root": str(tmp_path), "val_fraction": 0.1})
    assert [len(splits.train[1]), len(splits.val[1]), len(splits.test[1])] == [180, 20, 100]
    tx, ty = splits.test
    # one test image per class in class order: label k is the k-th name, pixels exact (PNG is lossless)
    assert ty.tolist() == list(range(100))
    k = c100.CLASSES.index("maple_tree")
    assert torch.equal(tx[k], torch.from_numpy(made["test", "maple_tree", 0]).permute(2, 0, 1))
    assert splits.meta["source"] == str(tmp_path / c100.IMAGES)


def test_malformed_image_folders(tmp_path):
    write_folders(tmp_path)
    train = tmp_path / c100.IMAGES / "train"
    for f in (train / "lion").iterdir():
        f.unlink()
    (train / "lion").rmdir()
    with pytest.raises(DataMissing, match=r"train lacks 1 of the 100 CIFAR-100 class folders: lion"):
        c100.load_cifar100(tmp_path, download=False)
    (train / "lion").mkdir()
    (train / "unicorn").mkdir()
    with pytest.raises(DataMissing, match="not CIFAR-100 classes: unicorn"):
        c100.load_cifar100(tmp_path, download=False)
    (train / "unicorn").rmdir()
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(train / "lion" / "small.png")
    with pytest.raises(DataMissing, match=r"1 images in .*train are not 32x32 RGB, e.g. .*small.png"):
        c100.load_cifar100(tmp_path, download=False)


def test_image_folder_without_test_split(tmp_path):
    (tmp_path / c100.IMAGES / "train").mkdir(parents=True)
    with pytest.raises(DataMissing, match=r"cifar100 lacks its test/ folder"):
        c100.load_cifar100(tmp_path, download=False)


def test_empty_class_folders(tmp_path):
    for split in ("train", "test"):
        for c in c100.CLASSES:
            (tmp_path / c100.IMAGES / split / c).mkdir(parents=True)
    with pytest.raises(DataMissing, match=r"train holds no images"):
        c100.load_cifar100(tmp_path, download=False)


def test_nothing_found_says_where_it_looked(tmp_path):
    with pytest.raises(DataMissing) as e:
        c100.load_cifar100(tmp_path / "nowhere", download=False)
    msg = str(e.value)
    assert "cifar-100-python" in msg and "cifar100" in msg and "download: true" in msg and c100.OFFICIAL_URL in msg


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    calls = []

    def fake_download(url, root, md5=None):
        calls.append((url, md5))
        write_release(Path(root))

    monkeypatch.setattr(tvu, "download_and_extract_archive", fake_download)
    # the generated release has its own checksums; accept them once it exists
    monkeypatch.setattr(c100, "verify", lambda *a: None)
    train, test, source = c100.load_cifar100(tmp_path, download=True)
    assert calls == [(c100.OFFICIAL_URL, c100.OFFICIAL_MD5)]
    assert len(train[1]) == 12 and source == str(tmp_path / c100.RELEASE)

    def failing(url, root, md5=None):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_and_extract_archive", failing)
    with pytest.raises(DataMissing, match="could not download CIFAR-100 .*network unreachable"):
        c100.load_cifar100(tmp_path / "other", download=True)
