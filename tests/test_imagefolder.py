"""Streamed image folders (qd/data/imagefolder.py) on a tiny generated tree of PNGs: scanning and its
error messages, the official transforms, the seeded epoch order and its sharding over ranks, and the
batches a task adapter draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import qd.data.imagefolder as imf
from qd.data import DataMissing

CLASSES = ("n001", "n002", "n003")
SPEC = {"name": "imagenet", "val_fraction": 0.25, "split_seed": 0, "image_size": 32, "resize": 36}


def write_tree(root, train_per_class=4, val_per_class=2, seed=0, classes=CLASSES):
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(30, 60, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{c}_{i}.png")
    return root


@pytest.fixture
def prepared(tmp_path):
    write_tree(tmp_path / "data")
    manifest = imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "data")}, tmp_path / "prep")
    return manifest, tmp_path / "prep"


def test_prepare_writes_an_index_and_a_manifest(prepared, tmp_path):
    manifest, folder = prepared
    assert manifest["classes"] == list(CLASSES) and manifest["num_classes"] == 3
    assert manifest["sizes"] == {"train": 9, "val": 3, "test": 6}
    assert (manifest["image_size"], manifest["resize"], manifest["augment"]) == (32, 36, "extended")
    index = imf.read_index(folder / imf.INDEX)
    paths, labels = index["test"]
    assert paths == [f"{c}/{c}_{i}.png" for c in CLASSES for i in range(2)]
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    train = set(index["train"][0])
    val = set(index["val"][0])
    assert not train & val and len(train | val) == 12  # the held-out share is disjoint from training
    for split in ("train", "val"):
        assert all(CLASSES[lab] == p.split("/")[0] for p, lab in zip(*index[split]))
    again = imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "data")}, tmp_path / "prep2")
    assert (tmp_path / "prep2" / imf.INDEX).read_bytes() == (folder / imf.INDEX).read_bytes()  # seeded
    assert again == {**manifest}
    limited = imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "data"), "train_limit": 5}, tmp_path / "p3")
    assert limited["sizes"]["train"] == 5


def test_missing_root_and_missing_val(tmp_path):
    with pytest.raises(DataMissing, match=r"image folder .*nowhere.train does not exist"):
        imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "nowhere")}, tmp_path / "p")
    write_tree(tmp_path / "d")
    for f in (tmp_path / "d" / "val").rglob("*.png"):
        f.unlink()
    with pytest.raises(DataMissing, match=r"image folder .*d.val holds no images in its 3 class folders"):
        imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "d")}, tmp_path / "p")


def test_no_class_folders(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "d" / "train" / "loose.png")
    with pytest.raises(DataMissing, match=r"d.train holds no class folders"):
        imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "d")}, tmp_path / "p")


def test_classes_differ_between_train_and_val(tmp_path):
    write_tree(tmp_path / "d")
    (tmp_path / "d" / "val" / "n009").mkdir()
    with pytest.raises(DataMissing, match=r"differ: 0 only in train/ \(e.g. -\), 1 only in val/ \(e.g. n009\)"):
        imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "d")}, tmp_path / "p")


def test_a_training_class_without_images(tmp_path):
    write_tree(tmp_path / "d")
    for f in (tmp_path / "d" / "train" / "n002").iterdir():
        f.unlink()
    with pytest.raises(DataMissing, match=r"d.train: 1 class folders hold no images, e.g. n002"):
        imf.prepare_image_folder({**SPEC, "root": str(tmp_path / "d")}, tmp_path / "p")


def test_explicit_folders_and_bad_augmentation(tmp_path):
    write_tree(tmp_path / "d")
    spec = {**SPEC, "root": "unused", "train_dir": str(tmp_path / "d" / "train"),
            "test_dir": str(tmp_path / "d" / "val")}
    assert imf.prepare_image_folder(spec, tmp_path / "p")["sizes"]["test"] == 6
    with pytest.raises(ValueError, match="dataset.augmentation"):
        imf.prepare_image_folder({**spec, "augmentation": "heavy"}, tmp_path / "p")


def test_sampler_order_comes_from_seed_and_epoch():
    def order(seed, epoch, batch=4):
        return [i for b in imf.EpochShardSampler(10, batch, seed, epoch) for i, _ in b]

    assert sorted(order(0, 0)) == list(range(10))  # every image once per epoch
    assert order(0, 0) == order(0, 0)
    assert order(0, 1) != order(0, 0) and order(1, 0) != order(0, 0)
    assert imf.epoch_seed(0, 1) != imf.epoch_seed(1, 0)
    seeds = imf.sample_seeds(7, np.arange(1000))
    assert len(set(seeds.tolist())) == 1000 and seeds.max() < 2**63
    assert not np.array_equal(seeds, imf.sample_seeds(8, np.arange(1000)))


@pytest.mark.parametrize("n,batch,world", [(10, 4, 2), (11, 4, 3), (9, 4, 2), (12, 6, 4)])
def test_ranks_together_draw_the_single_process_batches(n, batch, world):
    single = [[i for i, _ in b] for b in imf.EpochShardSampler(n, batch, seed=3, epoch=2)]
    shards = [list(imf.EpochShardSampler(n, batch, seed=3, epoch=2, rank=r, world=world)) for r in range(world)]
    assert all(len(s) == len(shards[0]) for s in shards)  # every rank takes part in every step
    assert len(shards[0]) == len(imf.EpochShardSampler(n, batch, 3, 2, 0, world))
    for step, whole in enumerate(single[: len(shards[0])]):
        parts = [[i for i, _ in s[step]] for s in shards]
        assert sorted(sum(parts, [])) == sorted(whole)
        assert parts[0] == whole[0::world]
    # a last global batch smaller than the world is dropped: 9 images, batch 4, 2 ranks -> 4 + 4 (+1 dropped)
    dropped = len(single) - len(shards[0])
    assert dropped == int(n % batch and n % batch < world)


def test_sampler_rejects_impossible_shapes():
    with pytest.raises(ValueError, match="smaller than the world size"):
        imf.EpochShardSampler(10, 2, 0, world=4)
    with pytest.raises(ValueError, match="rank 2"):
        imf.EpochShardSampler(10, 4, 0, rank=2, world=2)


def test_train_batches_are_augmented_sharded_and_reproducible(prepared):
    manifest, folder = prepared
    one = imf.StreamedImageFolder(manifest, folder, workers=0)
    assert one.n_train_batches(4) == 3
    epoch = list(one.train_epoch(4, seed=5, epoch=1))
    assert [tuple(x.shape) for x, _ in epoch] == [(4, 3, 32, 32), (4, 3, 32, 32), (1, 3, 32, 32)]
    assert sorted(torch.cat([y for _, y in epoch]).tolist()) == sorted(one.index["train"][1].tolist())
    # two ranks: interleaving their batches gives the one-process batches, pixel for pixel
    ranks = [imf.StreamedImageFolder(manifest, folder, rank=r, world=2, workers=0) for r in (0, 1)]
    parts = [list(r.train_epoch(4, seed=5, epoch=1)) for r in ranks]
    assert len(parts[0]) == len(parts[1]) == 2 == ranks[0].n_train_batches(4)  # the 1-image tail is dropped
    for (x, y), (x0, y0), (x1, y1) in zip(epoch, *parts):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    # the augmentation is random: another epoch crops differently
    assert not torch.equal(list(one.train_epoch(4, seed=5, epoch=2))[0][0], epoch[0][0])


def test_train_batches_from_a_generator_and_with_workers(prepared):
    manifest, folder = prepared
    data = imf.StreamedImageFolder(manifest, folder, workers=0)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = [x for x, _ in data.train_batches(4, g1)]
    b = [x for x, _ in imf.StreamedImageFolder(manifest, folder, workers=2).train_batches(4, g2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and len(a) == len(b) == 3  # workers change nothing
    assert not torch.equal(next(data.train_batches(4, g1))[0], a[0])  # the generator moved on: a new epoch
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    list(data.train_batches(4, torch.Generator().manual_seed(1)))
    assert torch.equal(torch.rand(1), before)  # the caller's global generator is untouched


def test_eval_batches_are_the_official_test_transform_in_order(prepared, tmp_path):
    manifest, folder = prepared
    data = imf.StreamedImageFolder(manifest, folder, workers=0)
    xs, ys = zip(*data.eval_batches("test", 4))
    assert [len(y) for y in ys] == [4, 2]
    x = torch.cat(xs)
    # by hand: shorter side to 36 (bilinear), centre 32x32 crop, [0, 1], ImageNet mean/std
    first = Image.open(tmp_path / "data" / "val" / "n001" / "n001_0.png").convert("RGB")
    w, h = first.size
    nw, nh = (36, int(36 * h / w)) if w <= h else (int(36 * w / h), 36)
    top, left = int(round((nh - 32) / 2)), int(round((nw - 32) / 2))
    crop = first.resize((nw, nh), Image.BILINEAR).crop((left, top, left + 32, top + 32))
    t = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255
    expected = (t - torch.tensor(imf.MEAN).view(3, 1, 1)) / torch.tensor(imf.STD).view(3, 1, 1)
    torch.testing.assert_close(x[0], expected)
    assert torch.cat(ys).tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(torch.cat([x for x, _ in data.eval_batches("test", 4)]), x)  # deterministic
    ranks = [imf.StreamedImageFolder(manifest, folder, rank=r, world=2, workers=0) for r in (0, 1)]
    shards = [torch.cat([y for _, y in r.eval_batches("test", 2, shard=True)]) for r in ranks]
    assert torch.cat(shards).tolist() == [0, 0, 1, 1, 2, 2] and len(shards[0]) == 3
    assert len(list(data.eval_batches("val", 8))[0][1]) == 3
    with pytest.raises(ValueError, match="unknown split"):
        data.eval_batches("dev", 4)


def test_manifest_round_trip_and_stale_index(prepared):
    import json

    manifest, folder = prepared
    (folder / "manifest.json").write_text(json.dumps(manifest))
    data = imf.StreamedImageFolder.from_prepared(folder, workers=0)
    assert data.meta["num_classes"] == 3 and data.meta["sizes"]["train"] == 9
    with pytest.raises(DataMissing, match="lists 9 train images but the manifest 10"):
        imf.StreamedImageFolder({**manifest, "sizes": {**manifest["sizes"], "train": 10}}, folder)
    with pytest.raises(DataMissing, match="manifest.json does not exist"):
        imf.StreamedImageFolder.from_prepared(folder / "elsewhere")


def test_an_unreadable_image_names_its_file(prepared, tmp_path):
    manifest, folder = prepared
    bad = tmp_path / "data" / "val" / "n002" / "n002_1.png"
    bad.write_bytes(b"not a png")
    data = imf.StreamedImageFolder(manifest, folder, workers=0)
    with pytest.raises(DataMissing, match=r"cannot read image .*n002_1.png"):
        list(data.eval_batches("test", 6))


def test_lighting_adds_one_pca_colour_offset_per_image():
    light = imf.Lighting()
    img = torch.rand(3, 5, 7)
    torch.manual_seed(0)
    out = light(img)
    torch.manual_seed(0)
    alpha = torch.randn(3) * 0.1
    eigvec = torch.tensor(imf.PCA_EIGVEC)
    offset = eigvec @ (alpha * torch.tensor(imf.PCA_EIGVAL))
    # by hand, channel 0: sum_j eigvec[0, j] * alpha_j * eigval_j
    by_hand = sum(imf.PCA_EIGVEC[0][j] * alpha[j].item() * imf.PCA_EIGVAL[j] for j in range(3))
    assert offset[0].item() == pytest.approx(by_hand, rel=1e-6)
    torch.testing.assert_close(out - img, offset.view(3, 1, 1).expand(3, 5, 7))
    assert torch.equal(imf.Lighting(alphastd=0)(img), img)


def test_transforms_are_the_official_recipe():
    import torchvision.transforms as T

    steps = imf.train_transform().transforms
    assert [type(s) for s in steps] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ColorJitter, T.ToTensor,
                                        imf.Lighting, T.Normalize]
    assert steps[0].size == (224, 224) and steps[0].scale == (0.08, 1.0)
    jitter = steps[2]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.6, 1.4),) * 3 + (None,)
    assert steps[4].alphastd == 0.1 and tuple(steps[5].mean) == imf.MEAN and tuple(steps[5].std) == imf.STD
    assert [type(s) for s in imf.train_transform("basic").transforms] == [T.RandomResizedCrop,
                                                                          T.RandomHorizontalFlip, T.ToTensor,
                                                                          T.Normalize]
    ev = imf.eval_transform().transforms
    assert ev[0].size == 256 and ev[1].size == (224, 224)
