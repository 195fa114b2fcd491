"""Datasets: the demo's digits split, CIFAR-10 from its release, image folders or a download, and the
messages when data is missing or corrupt."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch

from conftest import qd
from qd.data import DataMissing, Normalise, load_prepared, load_splits, prepare, save_splits
from qd.data.augment import apply_views, crop_and_flip, draw_views
from qd.data.cifar import CLASSES, download_official, read_batches, read_image_folder

DIGITS = {"name": "digits", "split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.2, "train_limit": None}


def test_digits_split_sizes_and_determinism():
    a, b = prepare(DIGITS), prepare(DIGITS)
    # 1797 images: round(0.2 * 1797) = 359 test, round(0.1 * 0.8 * 1797) = 144 val, the rest train
    assert a.meta["sizes"] == {"train": 1294, "val": 144, "test": 359}
    assert torch.equal(a.train[1], b.train[1]) and torch.equal(a.test[0], b.test[0])
    other = prepare(dict(DIGITS, split_seed=1))
    assert not torch.equal(a.test[1], other.test[1])
    # stored as the release's pixels, 0..16 (uint8), and normalised as the paper's CIFAR-10 pipeline:
    # [0, 1] -> (x - 0.5) / 0.5
    assert a.train[0].dtype == torch.uint8 and a.train[0].shape[1:] == (1, 8, 8)
    assert a.train[0].min() == 0 and a.train[0].max() == 16
    x = Normalise(a.meta)(a.train[0])
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(Normalise(a.meta)(torch.tensor([[[[0, 4, 8, 16]]]], dtype=torch.uint8)),
                       torch.tensor([[[[-1.0, -0.5, 0.0, 1.0]]]]))


def test_digits_inputs_are_those_of_the_float_files_written_before(tmp_path):
    """The digits were stored normalised (float) until the training set became resident pixels: the
    model's inputs are bit for bit the old ones, and a file of the old format still reads as it did."""
    from sklearn.datasets import load_digits

    from qd.data import random_split

    d = load_digits()
    old = (torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0 - 0.5) / 0.5  # the old digits_splits
    test, val, train = random_split(1797, (0.2, 0.1 * 0.8), 0)
    s = prepare(DIGITS)
    new = load_splits(_saved(s, tmp_path / "split.pt"))
    for got, idx in ((new.train[0], train), (new.val[0], val), (new.test[0], test)):
        assert torch.equal(got, old[idx])
    y = torch.tensor(d.target)
    legacy = {"train": (old[train], y[train]), "val": (old[val], y[val]), "test": (old[test], y[test]),
              "meta": {k: v for k, v in s.meta.items() if k != "normalize"}}
    torch.save(legacy, tmp_path / "old.pt")
    assert torch.equal(load_splits(tmp_path / "old.pt").train[0], new.train[0])
    assert load_prepared(tmp_path / "old.pt").train[0].dtype == torch.float32


def _saved(splits, path):
    save_splits(splits, path)
    return path


def test_prepared_file_round_trip(tmp_path):
    s = prepare(dict(DIGITS, train_limit=100))
    save_splits(s, tmp_path / "split.pt")
    back = load_splits(tmp_path / "split.pt")
    assert len(back.train[1]) == 100
    assert torch.equal(back.val[0], Normalise(s.meta)(s.val[0]))
    assert torch.equal(load_prepared(tmp_path / "split.pt").val[0], s.val[0])  # the stored pixels


def _spec(root, download=False):
    return {"name": "cifar10", "root": str(root), "download": download, "val_fraction": 0.1, "split_seed": 0,
            "train_limit": None}


def test_missing_cifar_says_where_it_looked_and_how_to_get_it(tmp_path):
    out = tmp_path / "out" / "split.pt"
    proc = qd("data", "--spec", json.dumps(_spec(tmp_path)), "--out", str(out))
    assert proc.returncode == 1
    msg = proc.stderr
    assert f"CIFAR-10 not found under {tmp_path}" in msg
    for looked in ("cifar-10-batches-py/", "cifar10/train|test/<class>/", "cifar10-jpeg.tar.gz"):
        assert looked in msg
    assert "dataset.download: true" in msg and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert not out.exists()


def test_corrupt_release_file_names_file_and_checksums(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataMissing) as e:
        prepare(_spec(tmp_path))
    got = hashlib.md5(b"not a pickle").hexdigest()
    assert f"{folder / 'data_batch_1'} is corrupt: its md5 is {got}, expected c99cafc152244af753f735de768cd75f" in str(e.value)


def test_corrupt_image_archive_is_refused(tmp_path):
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"garbage")
    with pytest.raises(DataMissing, match="cifar10-jpeg.tar.gz is corrupt: its sha256 is"):
        prepare(_spec(tmp_path))


def _tiny_release(path):
    """A 4-image stand-in of the official release, as a .tar.gz, and the MD5s of its files."""
    src = path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    sums = {}
    for i, name in enumerate(["data_batch_1", "test_batch"]):
        d = {"data": np.arange(4 * 3072, dtype=np.uint8).reshape(4, 3072) + i, "labels": [0, 1, 2, 3]}
        (src / name).write_bytes(pickle.dumps(d))
        sums[name] = hashlib.md5((src / name).read_bytes()).hexdigest()
    archive = path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="cifar-10-batches-py")
    return archive, sums


def test_download_fetches_checks_and_extracts(tmp_path):
    """The real download code on a small archive served over HTTP from this machine."""
    archive, sums = _tiny_release(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
        root = tmp_path / "root"
        md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        with pytest.raises(DataMissing, match="could not download CIFAR-10"):
            download_official(root, url=url, md5="0" * 32)  # a wrong checksum is not accepted
        download_official(root, url=url, md5=md5)
    finally:
        server.shutdown()
    x, y = read_batches(root / "cifar-10-batches-py", ["data_batch_1"], sums)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    assert x[0, 0, 0, :3].tolist() == [0, 1, 2] and y.tolist() == [0, 1, 2, 3]


def test_image_folder_from_shared_archive(shared, tmp_path):
    """Real JPEGs: a few images per class from the shared CIFAR-10 archive, read as an image folder."""
    with tarfile.open(shared / "cifar10-jpeg.tar.gz") as tar:
        wanted = [m for m in tar.getmembers() if m.name.startswith("cifar10/train/") and m.name[-8:-4] in ("0000", "0001")]
        tar.extractall(tmp_path, members=wanted, filter="data")
    x, y = read_image_folder(tmp_path / "cifar10" / "train")
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [c for c in range(len(CLASSES)) for _ in range(2)]
    assert 20 < x.float().mean() < 235  # real pictures, not blank


@pytest.mark.parametrize("seed", range(6))
def test_crop_and_flip_is_a_shifted_window_of_the_padded_image(seed):
    """Each image is the 6x6 window at offsets (dy, dx) of its 2-pixel zero-padded copy, mirrored when
    the flip is drawn; the draws come from the generator in the order dy, dx, flip."""
    x = torch.arange(2 * 36, dtype=torch.float).view(2, 1, 6, 6)
    out = crop_and_flip(x, torch.Generator().manual_seed(seed), pad=2)
    g = torch.Generator().manual_seed(seed)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        window = padded[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window)


def test_a_view_is_its_draws_and_cropping_pixels_pads_black():
    """A hand-checked view of a 1-channel 3x3 uint8 image with 1 pixel of padding: offsets (0, 2) take
    rows -1..1 and columns 1..3 of the original, the flip mirrors them; the padding is 0 (black)."""
    x = torch.tensor([[[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]], dtype=torch.uint8)
    out = apply_views(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([False]), pad=1)
    assert out.dtype == torch.uint8 and out[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    flipped = apply_views(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([True]), pad=1)
    assert flipped[0, 0].tolist() == [[0, 0, 0], [0, 3, 2], [0, 6, 5]]
    # crop_and_flip is apply_views of draw_views from the same generator state
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    batch = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(crop_and_flip(batch, g1, pad=2), apply_views(batch, *draw_views(5, g2, pad=2), pad=2))


def test_the_padding_is_black_after_normalisation_as_in_the_official_loaders():
    """RandomCrop(32, padding=4) pads the raw image, Normalize comes after: a padded pixel is the
    normalised black, (0 - mean) / std per channel, not the normalised image's zero (the mean colour)."""
    meta = {"normalize": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.243, 0.261]}}
    x = torch.full((1, 3, 32, 32), 200, dtype=torch.uint8)
    out = Normalise(meta)(apply_views(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([False])))
    black = [(0 - m) / s for m, s in zip(meta["normalize"]["mean"], meta["normalize"]["std"])]
    for c in range(3):
        assert out[0, c, :4, :].flatten().tolist() == pytest.approx([black[c]] * 4 * 32)  # the 4 rows above
        assert out[0, c, 4:, 4:].flatten().tolist() == pytest.approx([(200 / 255 - meta["normalize"]["mean"][c])
                                                                       / meta["normalize"]["std"][c]] * 28 * 28)
