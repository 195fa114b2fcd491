"""Image classification: the paper's CIFAR, ImageNet and the demo's digits as a task adapter.

Data small enough for memory (digits, CIFAR) is a prepared ``split.pt`` of image and label tensors
moved whole to the run's device; batches are index slices of it. The loss is cross-entropy on the
labels, distillation is Hinton's loss on the logits (``qd.distill``), and evaluation reports top-1
and top-5 accuracy and the mean loss of the weights being reported.

Try: ``pytest tests/test_tasks.py``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from qd.data import batches, load_splits, prepare, save_splits
from qd.data.augment import crop_and_flip
from qd.distill import distillation_loss
from qd.evaluate import classify
from qd.tasks import TASKS
from qd.tasks.base import Task

SPLIT_FILE = "split.pt"


class Classification(Task):
    info = TASKS["classification"]

    def __init__(self, spec: dict, folder: Path, device: torch.device):
        super().__init__(spec, folder, device)
        splits = load_splits(Path(folder) / SPLIT_FILE)
        move = lambda t: tuple(v.to(device) for v in t)  # noqa: E731
        self.train, self.val, self.test = move(splits.train), move(splits.val), move(splits.test)
        self.meta = splits.meta
        self.augment = spec.get("train", {}).get("augment", False)
        self.eval_batch_size = spec.get("evaluation", {}).get("batch_size", 512)
        # a teacher's logits on the (unaugmented) training images, computed once instead of every step
        self.cache_teacher = spec.get("distill", {}).get("cache_teacher", False) and not self.augment
        self._teacher_logits: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare(cls, dataset: dict, folder: Path) -> dict:
        splits = prepare(dataset)
        save_splits(splits, Path(folder) / SPLIT_FILE)
        return dict(splits.meta)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """``(images, labels, indices)``: the indices let a cached teacher output be looked up."""
        x, y = self.train
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            xb = x[idx]
            # drawn after the epoch's permutation, from the same generator: one seed fixes the epoch
            yield (crop_and_flip(xb, generator) if self.augment else xb), y[idx], idx

    def n_train_batches(self, batch_size: int) -> int:
        return math.ceil(len(self.train[1]) / batch_size)

    def eval_batches(self, split: str, batch_size: int):
        return batches(*self.split(split), batch_size)

    # ------------------------------------------------------------------ models
    @classmethod
    def build_model(cls, model_spec: dict, model_meta: dict):
        from qd.models import build_model

        return build_model(model_spec, **model_meta)

    def model_meta(self) -> dict:
        m = self.meta
        return {"in_channels": m["in_channels"], "num_classes": m["num_classes"], "image_size": m["image_size"]}

    def inputs(self, batch) -> tuple:
        return (batch[0],)

    # ------------------------------------------------------------------ losses
    def loss(self, output, batch) -> torch.Tensor:
        return F.cross_entropy(output, batch[1])

    def teacher_output(self, teacher, batch) -> torch.Tensor:
        if self.cache_teacher and len(batch) == 3:
            return self._cached_logits(teacher)[batch[2]]
        with torch.inference_mode():
            logits = teacher(batch[0])
        # a copy made outside inference mode is a tensor autograd may use (as a constant)
        return logits.clone()

    @torch.no_grad()
    def _cached_logits(self, teacher) -> torch.Tensor:
        """The teacher's logits on every training image, in split order, computed on first use."""
        if id(teacher) not in self._teacher_logits:
            was_training = teacher.training
            teacher.eval()
            self._teacher_logits[id(teacher)] = torch.cat(
                [teacher(xb) for xb, _ in batches(*self.train, self.eval_batch_size)])
            teacher.train(was_training)
        return self._teacher_logits[id(teacher)]

    def distillation_loss(self, output, teacher_output, batch, distill: dict) -> torch.Tensor:
        return distillation_loss(output, teacher_output, batch[1], distill["temperature"], distill["weight"],
                                 distill["reduction"])

    # ------------------------------------------------------------------ evaluation
    def epoch_metrics(self, forward, split: str) -> dict:
        x, y = self.split(split)
        if len(y) == 0:
            return {}
        return {"accuracy": classify(forward, x, y, self.eval_batch_size)["accuracy"]}

    def final_metrics(self, model) -> tuple[dict, dict[str, str]]:
        test = classify(model, *self.test, self.eval_batch_size, predictions=True)
        val = classify(model, *self.val, self.eval_batch_size) if len(self.val[1]) else None
        row = {"accuracy": test["accuracy"], "top5": test["top5"], "test_loss": test["loss"],
               "val_accuracy": val["accuracy"] if val else None, "n_test": len(self.test[1])}
        return row, {"test_outputs.csv": outputs_csv(self.test[1], test["predictions"])}

    def example_input(self, batch_size: int) -> tuple:
        return (self.test[0][:batch_size],)


def outputs_csv(labels: torch.Tensor, predictions: torch.Tensor) -> str:
    """``index,label,prediction`` per test example, in test-split order (the report's paired tests)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "prediction"])
    w.writerows(zip(range(len(labels)), labels.tolist(), predictions.tolist()))
    return buf.getvalue()
