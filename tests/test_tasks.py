"""The classification task adapter: prepared data, batches, losses through RunContext, metrics and the
per-example outputs, on the demo's digits."""
from __future__ import annotations

import csv
import io

import pytest
import torch
import torch.nn.functional as F

from qd.data import load_splits
from qd.data.augment import apply_views, draw_views
from qd.distill import distillation_loss
from qd.methods.contract import RunContext
from qd.tasks import TASKS, load_task, task_info
from qd.tasks.classification import Classification

DIGITS = {"kind": "classification", "name": "digits", "split_seed": 0, "val_fraction": 0.1, "test_fraction": 0.2,
          "train_limit": None}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    f = tmp_path_factory.mktemp("digits")
    meta = Classification.prepare(DIGITS, f)
    assert meta["sizes"] == {"train": 1294, "val": 144, "test": 359}
    return f


def _task(folder, **train):
    return Classification({"train": train, "evaluation": {"batch_size": 100}}, folder, torch.device("cpu"))


def test_registry_names_the_adapter_and_its_metrics():
    assert load_task("classification") is Classification
    info = task_info("classification")
    assert (info.primary, info.higher_is_better, info.epoch_metric) == ("accuracy", True, "accuracy")
    assert set(TASKS) == {"classification", "translation"}
    with pytest.raises(ValueError, match="unknown task kind 'speech'"):
        task_info("speech")


def test_batches_cover_the_split_once_in_a_seeded_order(folder):
    task = _task(folder)
    assert task.n_train_batches(64) == 21  # ceil(1294 / 64)
    first = [b[1] for b in task.train_batches(64, torch.Generator().manual_seed(5))]
    again = [b[1] for b in task.train_batches(64, torch.Generator().manual_seed(5))]
    other = [b[1] for b in task.train_batches(64, torch.Generator().manual_seed(6))]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert torch.equal(torch.cat(first).sort().values, task.train[1].sort().values)
    ordered = torch.cat([y for _, y in task.eval_batches("test", 100)])
    assert torch.equal(ordered, task.test[1])


def test_augmentation_only_when_the_recipe_asks(folder):
    plain, augmented = _task(folder), _task(folder, augment=True)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x_plain = next(plain.train_batches(32, g1))[0]
    x_aug = next(augmented.train_batches(32, g2))[0]
    assert x_plain.shape == x_aug.shape
    assert not torch.equal(x_plain, x_aug)


def test_the_training_set_is_resident_as_pixels_and_each_batch_is_normalised(folder):
    """The training images stay as stored (uint8) on the device; a batch is normalised after its crop,
    so a plain batch is bit for bit the normalised images and a crop's padding is black (-1 here)."""
    task, augmented = _task(folder), _task(folder, augment=True)
    assert task.train[0].dtype == torch.uint8 and task.val[0].dtype == torch.float32
    normalised = load_splits(folder / "split.pt").train[0]
    x, _, idx = next(task.train_batches(64, torch.Generator().manual_seed(0)))
    assert torch.equal(x, normalised[idx])
    x, _, idx = next(augmented.train_batches(64, torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(0)
    torch.randperm(1294, generator=g)  # the epoch's order comes first, then the crops
    dy, dx, flip = draw_views(64, g)
    assert torch.equal(x, (apply_views(task.train[0][idx], dy, dx, flip).float() / 16 - 0.5) / 0.5)
    top = dy == 0  # shifted down by the whole padding: the top 4 rows are padding
    assert top.any() and (x[top][:, :, :4, :] == -1.0).all()
    # against the crop of the normalised images (before the fix): the same pixels, but black padding
    # where that padded with the normalised zero (grey)
    before = apply_views(normalised[idx], dy, dx, flip)
    image = apply_views(torch.ones_like(task.train[0][idx]), dy, dx, flip) == 1
    assert torch.equal(x[image], before[image])
    assert (x[~image] == -1.0).all() and (before[~image] == 0.0).all() and (~image).any()


def test_objective_is_the_task_loss_or_the_distillation_loss(folder):
    task = _task(folder)
    torch.manual_seed(0)
    student, teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), \
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    spec = {"distill": {"temperature": 2.0, "weight": 0.7, "reduction": "batchmean"}, "seed": 0}
    ctx = RunContext(spec, task, torch.device("cpu"), folder)
    x, y = next(task.eval_batches("train", 50))
    assert ctx.objective(student)((x, y)).item() == pytest.approx(F.cross_entropy(student(x), y).item())
    expected = distillation_loss(student(x), teacher(x).detach(), y, 2.0, 0.7, "batchmean")
    got = ctx.objective(student, teacher)((x, y))
    assert got.item() == pytest.approx(expected.item())
    got.backward()  # the teacher's output is a constant: only the student gets gradients
    assert student[1].weight.grad is not None and teacher[1].weight.grad is None


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.images = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), 0

    def forward(self, x):
        self.images += len(x)
        return self.net(x)


def test_cached_teacher_logits_give_the_same_loss_and_run_the_teacher_once(folder):
    torch.manual_seed(0)
    teacher, student = _Counting().eval(), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    distill = {"temperature": 2.0, "weight": 0.7, "reduction": "legacy_mean"}
    losses = {}
    for cached in (False, True):
        task = Classification({"distill": dict(distill, cache_teacher=cached), "evaluation": {"batch_size": 100}},
                              folder, torch.device("cpu"))
        ctx = RunContext({"distill": distill, "seed": 0}, task, torch.device("cpu"), folder)
        loss = ctx.objective(student, teacher)
        teacher.images = 0
        losses[cached] = [loss(b).item() for _ in range(2) for b in task.train_batches(64, torch.Generator().manual_seed(3))]
        # two epochs: every image twice without the cache, once with it
        assert teacher.images == (1294 if cached else 2 * 1294)
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    augmented = Classification({"distill": dict(distill, cache_teacher=True), "train": {"augment": True}},
                               folder, torch.device("cpu"))
    assert not augmented.cache_teacher  # augmented images differ every epoch: nothing to cache


class _Constant(torch.nn.Module):
    """Logits that rank the classes 3 > 1 > 4 > 0 > 2 > ... for every image."""

    def forward(self, x):
        order = torch.tensor([3.0, 8.0, 1.0, 10.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        return order.expand(len(x), 10)


def test_final_metrics_and_per_example_outputs(folder):
    task = _task(folder)
    row, files = task.final_metrics(_Constant())
    y = task.test[1]
    assert row["n_test"] == 359
    assert row["accuracy"] == pytest.approx(100 * (y == 3).float().mean().item())
    top5 = (y == 3) | (y == 1) | (y == 4) | (y == 0) | (y == 2)
    assert row["top5"] == pytest.approx(100 * top5.float().mean().item())
    assert row["val_accuracy"] == pytest.approx(100 * (task.val[1] == 3).float().mean().item())
    rows = list(csv.DictReader(io.StringIO(files["test_outputs.csv"])))
    assert len(rows) == 359 and {r["prediction"] for r in rows} == {"3"}
    assert [int(r["label"]) for r in rows] == y.tolist()
    assert task.epoch_metrics(_Constant(), "test") == {"accuracy": pytest.approx(row["accuracy"])}


def test_an_empty_validation_split_is_allowed(tmp_path):
    Classification.prepare(dict(DIGITS, val_fraction=0.0), tmp_path)
    task = _task(tmp_path)
    assert len(task.val[1]) == 0 and len(task.train[1]) == 1797 - 359
    assert task.epoch_metrics(_Constant(), "val") == {}
    row, _ = task.final_metrics(_Constant())
    assert row["val_accuracy"] is None


def test_model_meta_rebuilds_the_model(folder):
    task = _task(folder)
    spec = {"family": "convnet", "name": "student3", "width": 0.25, "logits_relu": True, "dropout": False}
    a = task.new_model(spec)
    b = Classification.build_model(spec, task.model_meta())
    assert task.model_meta() == {"in_channels": 1, "num_classes": 10, "image_size": 8}
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert task.example_input(7)[0].shape == (7, 1, 8, 8)
