"""Image classification: the paper's CIFAR, ImageNet and the demo's digits as a task adapter.

Two kinds of data, one interface:

* small datasets (digits, CIFAR-10/100) are a prepared ``split.pt`` of image and label tensors moved
  whole to the run's device; the training images stay resident as their stored uint8 pixels, a batch
  is an index slice of them, cropped and flipped as a whole where the recipe augments, then normalised
  (so the crop's padding is black, as in the official loaders: ``qd.data.augment``); nothing is decoded
  or normalised again per epoch;
* ImageNet is an index of image files (``qd.data.imagefolder``), decoded and augmented on the fly by a
  ``DataLoader`` with workers.

Under ``torchrun`` (``qd.distributed``) each process takes its share of every global batch. The loss
is cross-entropy on the labels, distillation is Hinton's loss on the logits (``qd.distill``) toward
the teacher's logits: computed at every step, cached once per run on the unaugmented images
(``distill.cache_teacher``), or read from the teacher's cache of K augmented views per image
(``distill.teacher_views``, ``qd.teacher_views``), and
evaluation reports top-1 and top-5 accuracy and the mean loss of the weights being reported.
A finished model classifies image files read as evaluation reads its data
(:meth:`Classification.classify_images`, ``qd classify``, :mod:`qd.use`).

Try: ``pytest tests/test_tasks.py``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from qd import distributed
from qd import teacher_views
from qd.data import Normalise, batches, load_prepared, load_splits, prepare, save_splits
from qd.data.augment import crop_and_flip
from qd.distill import distillation_loss
from qd.errors import DataMissing
from qd.evaluate import classify_batches
from qd.tasks import TASKS, dataset_builder, dataset_info
from qd.tasks.base import Task, prepared_file

SPLIT_FILE = "split.pt"


class Classification(Task):
    info = TASKS["classification"]

    def __init__(self, spec: dict, folder: Path, device: torch.device):
        super().__init__(spec, folder, device)
        train = spec.get("train", {})
        self.augment = train.get("augment", False)
        self.epoch_examples = train.get("epoch_examples")  # None: every training image each epoch
        self.eval_batch_size = spec.get("evaluation", {}).get("batch_size", 512)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        manifest = Path(folder) / "manifest.json"
        self.streamed = manifest.exists() and json.loads(manifest.read_text()).get("streamed", False)
        if self.streamed:
            from qd.data.imagefolder import StreamedImageFolder

            self.stream = StreamedImageFolder.from_prepared(folder, rank=self.rank, world=self.world,
                                                            workers=spec.get("evaluation", {}).get("workers", 4),
                                                            pin_memory=device.type == "cuda")
            self.meta = self.stream.meta
        else:
            splits = load_prepared(Path(folder) / SPLIT_FILE)
            self.meta = splits.meta
            self.normalise = Normalise(self.meta, device)
            move = lambda t: tuple(v.to(device) for v in t)  # noqa: E731
            # evaluation splits normalised once here (on the CPU, as they always were); the training
            # images resident as stored, normalised per batch after their crop
            cpu = Normalise(self.meta)
            self.train = move(splits.train)
            self.val, self.test = (move((cpu(x), y)) for x, y in (splits.val, splits.test))
        distill = spec.get("distill", {})
        # a teacher's logits on the (unaugmented) training images, computed once instead of every step
        self.cache_teacher = distill.get("cache_teacher", False) and not self.augment and not self.streamed
        self._teacher_logits: dict[int, torch.Tensor] = {}
        # the teacher's logits on K fixed augmented views per image, read from its run folder
        self.view_count = distill.get("teacher_views", 0)
        self.views: teacher_views.TeacherViews | None = None
        if self.view_count and (self.streamed or not self.augment):
            raise ValueError(f"distill.teacher_views: {self.view_count} caches the teacher on augmented views of "
                             "a prepared split; this run " + ("streams its images" if self.streamed else
                                                              "does not augment (train.augment: false; "
                                                              "distill.cache_teacher caches unaugmented images)"))

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare(cls, dataset: dict, folder: Path) -> dict:
        if dataset_info(dataset["name"], "classification").streamed:  # an index of files, decoded while training
            return dataset_builder(dataset["name"], "classification")(dataset, folder)
        splits = prepare(dataset)
        save_splits(splits, Path(folder) / SPLIT_FILE)
        return dict(splits.meta)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def split_size(self, name: str) -> int:
        return self.meta["sizes"][name] if self.streamed else len(self.split(name)[1])

    def train_batches(self, batch_size: int, generator: torch.Generator):
        """``(images, labels, indices)`` of this process's share of each global batch, with the drawn
        view of each image as a fourth element when the teacher's views are cached; the indices (and
        views) let a cached teacher output be looked up."""
        if self.streamed:
            for x, y in self.stream.train_batches(batch_size, generator):
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        if self.view_count and self.views is None:
            raise ValueError(f"distill.teacher_views: {self.view_count} is set but no teacher run was given "
                             "(use_teacher_run reads its cache)")
        x, y = self.train
        order = torch.randperm(len(y), generator=generator)[: self.epoch_examples]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size][self.rank::self.world]
            xb = x[idx]
            # crops, flips and views are drawn after the epoch's permutation, from the same generator:
            # one seed fixes the epoch
            if self.views is not None:
                view = torch.randint(0, self.views.k, (len(idx),), generator=generator)
                yield self.normalise(self.views.crop(xb, idx, view)), y[idx], idx, view
            else:
                yield self.normalise(crop_and_flip(xb, generator) if self.augment else xb), y[idx], idx

    def n_train_batches(self, batch_size: int) -> int:
        if self.streamed:
            return self.stream.n_train_batches(batch_size)
        return math.ceil(min(len(self.train[1]), self.epoch_examples or len(self.train[1])) / batch_size)

    def eval_batches(self, split: str, batch_size: int):
        if self.streamed:
            return ((x.to(self.device), y.to(self.device)) for x, y in self.stream.eval_batches(split, batch_size))
        return ((self.normalise(x), y) for x, y in batches(*self.split(split), batch_size))

    def loss_units(self, batch) -> int:
        return len(batch[1])

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

    def use_teacher_run(self, folder: Path) -> None:
        if not self.view_count:
            return
        from qd.run import ARTEFACT, file_id

        folder = Path(folder)
        key = teacher_views.cache_key(file_id(folder / ARTEFACT), teacher_views.train_digest(*self.train),
                                      self.view_count)
        self.views = teacher_views.load(folder / teacher_views.views_file(self.view_count), key, self.device)

    def teacher_output(self, teacher, batch) -> torch.Tensor:
        if self.views is not None and len(batch) == 4:  # a batch of cached views: (x, y, indices, views)
            return self.views.teacher_logits(batch[2], batch[3])
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
                [teacher(self.normalise(xb)) for xb, _ in batches(*self.train, self.eval_batch_size)])
            teacher.train(was_training)
        return self._teacher_logits[id(teacher)]

    def distillation_loss(self, output, teacher_output, batch, distill: dict) -> torch.Tensor:
        return distillation_loss(output, teacher_output, batch[1], distill["temperature"], distill["weight"],
                                 distill["reduction"])

    # ------------------------------------------------------------------ evaluation
    def epoch_metrics(self, forward, split: str) -> dict:
        if self.split_size(split) == 0:
            return {}
        return {"accuracy": classify_batches(forward, self.eval_batches(split, self.eval_batch_size))["accuracy"]}

    def final_metrics(self, model) -> tuple[dict, dict[str, str]]:
        test = classify_batches(model, self.eval_batches("test", self.eval_batch_size), predictions=True)
        val = classify_batches(model, self.eval_batches("val", self.eval_batch_size)) \
            if self.split_size("val") else None
        row = {"accuracy": test["accuracy"], "top5": test["top5"], "test_loss": test["loss"],
               "val_accuracy": val["accuracy"] if val else None, "n_test": test["n"]}
        return row, {self.info.outputs: outputs_csv(test["labels"], test["predictions"])}

    @classmethod
    def test_examples(cls, folder: Path):
        path = Path(folder) / SPLIT_FILE
        return load_splits(path).test if path.exists() else None

    # ------------------------------------------------------------------ use
    @classmethod
    def classify_images(cls, model, model_meta: dict, folder: Path, evaluation: dict,
                        images: list[Path]) -> tuple[torch.Tensor, list[str]]:
        """Logits of image files, in order, read as evaluation reads the prepared data
        (:func:`model_inputs`), batch for batch (``evaluation.batch_size``, 512). Classes are named as
        the prepared data names them, else by their index (the digits' index is the digit)."""
        meta = prepared_meta(folder, model_meta)
        device = next(model.parameters()).device
        size = evaluation.get("batch_size", 512)
        with torch.no_grad():  # a batch of files decoded at a time: a folder of any size fits in memory
            logits = [model(model_inputs(images[i:i + size], meta).to(device)).cpu()
                      for i in range(0, len(images), size)]
        classes = meta.get("classes") or [str(c) for c in range(meta["num_classes"])]
        return torch.cat(logits) if logits else torch.zeros(0, meta["num_classes"]), classes

    def example_input(self, batch_size: int) -> tuple:
        if self.streamed:
            return (next(iter(self.eval_batches("test", batch_size)))[0],)
        return (self.test[0][:batch_size],)


def outputs_csv(labels: torch.Tensor, predictions: torch.Tensor) -> str:
    """``index,label,prediction`` per test example, in test-split order (the report's paired tests)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "prediction"])
    w.writerows(zip(range(len(labels)), labels.tolist(), predictions.tolist()))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- use
def prepared_meta(folder: Path, model_meta: dict) -> dict:
    """The prepared data's description (``manifest.json``: shape, normalisation, class names), checked
    against the model's meta: what reading an image file needs and a model file does not carry."""
    path = prepared_file(folder, "manifest.json", "images' normalisation and class names")
    meta = json.loads(path.read_text())
    differing = [k for k in ("in_channels", "num_classes", "image_size") if meta.get(k) != model_meta[k]]
    if differing:
        raise DataMissing(f"{path}: {', '.join(f'{k} {meta.get(k)}' for k in differing)} but the model has "
                          f"{', '.join(f'{k} {model_meta[k]}' for k in differing)}: {folder} is not the data "
                          "the model was trained on; give its own data with --data")
    if not meta.get("streamed") and "normalize" not in meta:
        raise DataMissing(f"{path} has no 'normalize' (mean, std): prepare the data again ('qd data')")
    return meta


def model_inputs(images: list[Path], meta: dict) -> torch.Tensor:
    """A batch of image files as the model reads the prepared data's test images: a streamed dataset's
    through its evaluation transform (resize, centre crop, normalisation), a prepared split's as its
    stored pixels (:func:`stored_pixels`), normalised."""
    if meta.get("streamed"):
        from qd.data.imagefolder import eval_transform

        transform = eval_transform(meta["resize"], meta["image_size"])
        return torch.stack([transform(read_image(path, 3)) for path in images])
    return Normalise(meta)(torch.stack([stored_pixels(path, meta) for path in images]))


def read_image(path: Path, channels: int):
    """An image file as a PIL image of ``channels`` (1: grey, 3: RGB), or an error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise DataMissing(f"cannot read image {path}: {e}") from None


def stored_pixels(path: Path, meta: dict) -> torch.Tensor:
    """An image file as the prepared split stores its images: ``(C, S, S)`` uint8 (resized to the
    dataset's size ``S`` where it differs), rescaled from the file's 0..255 to the dataset's full
    intensity (``normalize.white``: 16 for the digits) and rounded, so a stored image written as an
    8-bit file reads back to exactly its stored pixels."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    image = read_image(path, meta["in_channels"])
    size = meta["image_size"]
    if image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    white = meta["normalize"].get("white", 255)
    return torch.round(pil_to_tensor(image).float() * white / 255).to(torch.uint8)
