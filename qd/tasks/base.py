"""The interface every task adapter implements (``docs/adding-a-task.md`` walks through it).

A *batch* is whatever the adapter's iterators yield (a pair of tensors for classification, a dict of
token tensors for translation); only the adapter looks inside it. A *forward* is any callable that
takes the model's positional inputs, ``forward(*task.inputs(batch))``: the model itself, or a method's
pass through quantized weights (``qd.ste.quantized_forward``). So a method never needs to know what
a batch holds or which loss the task uses.

Life cycle:

* ``Task.prepare(dataset_spec, folder)`` (the workflow's data rule, ``qd data``) turns raw data into
  the task's prepared files under ``folder`` and returns the manifest written beside them;
* ``Task(spec, folder, device)`` (every run) reads the prepared files; ``meta`` describes them and
  ``model_meta()`` is the part a model needs to be rebuilt (stored in the compressed artefact);
* the engine draws ``train_batches`` each epoch and asks ``epoch_metrics`` of the forward being
  reported; the run asks ``final_metrics`` of the final model and writes its per-example outputs;
* a finished model is used on new inputs (``qd translate``, ``qd classify``: :mod:`qd.use`) through a
  class method that reads only what the model file does not carry from the prepared folder:
  ``translate_sentences`` or ``classify_images``; a kind provides the one that fits it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qd.errors import DataMissing, QdError
from qd.tasks import TaskInfo

if TYPE_CHECKING:  # annotations only: importing the interface imports no torch, so a plug-in kind's
    import torch  # module (its INFO) can be read while the workflow builds its DAG
    import torch.nn as nn

Batch = Any
Forward = Callable[..., Any]


def prepared_file(folder: Path, name: str, what: str) -> Path:
    """``folder / name``, which holds ``what`` for a model used on new inputs (``qd translate``,
    ``qd classify``), or an error saying where it comes from: what a model file does not carry is in its
    task's prepared data folder."""
    path = Path(folder) / name
    if not path.exists():
        raise DataMissing(f"{path} does not exist: the model file does not carry the {what}, which its task's "
                          "prepared data folder holds (written by 'qd data' or the workflow's data rule); give that "
                          "folder with --data")
    return path


class Task:
    """Base class of the adapters; every method below is part of the contract."""

    info: TaskInfo

    def __init__(self, spec: dict, folder: Path, device: torch.device):
        self.spec, self.folder, self.device = spec, Path(folder), device
        self.meta: dict = {}

    # ------------------------------------------------------------------ data
    @classmethod
    def prepare(cls, dataset: dict, folder: Path) -> dict:
        """Write the prepared dataset described by a task's ``dataset`` block into ``folder``; the
        manifest (sizes, source, metadata) is returned and written by the caller."""
        raise NotImplementedError

    def train_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
        """One epoch of shuffled (and, where the recipe says so, augmented) training batches; all
        randomness comes from ``generator``. ``batch_size`` is the global batch: under ``torchrun``
        each process yields its share of it (``qd.distributed.rank()`` of ``world_size()``)."""
        raise NotImplementedError

    def n_train_batches(self, batch_size: int) -> int:
        raise NotImplementedError

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """Batches of ``split`` (``train``, ``val`` or ``test``) in order, never augmented."""
        raise NotImplementedError

    def loss_units(self, batch: Batch) -> int:
        """How many units :meth:`loss` averages over in ``batch`` (examples, target tokens): the weight
        of this process's gradient when several processes share a global batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------ models
    @classmethod
    def build_model(cls, model_spec: dict, model_meta: dict) -> nn.Module:
        """A freshly initialised model from a run spec's ``model`` block and :meth:`model_meta`."""
        raise NotImplementedError

    def model_meta(self) -> dict:
        """What :meth:`build_model` needs of the data (shape, classes, vocabularies): JSON-able."""
        raise NotImplementedError

    def new_model(self, model_spec: dict) -> nn.Module:
        return self.build_model(model_spec, self.model_meta()).to(self.device)

    def inputs(self, batch: Batch) -> tuple:
        """The model's positional inputs for ``batch``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ losses
    def loss(self, output, batch: Batch) -> torch.Tensor:
        """The task's own training loss (cross-entropy on labels or target tokens)."""
        raise NotImplementedError

    def teacher_output(self, teacher: nn.Module, batch: Batch):
        """The teacher's output on ``batch``, without gradient (an adapter may cache it)."""
        raise NotImplementedError

    def use_teacher_run(self, folder: Path) -> None:
        """The run's teacher run folder, for adapters that compare with the teacher's own outputs
        (translation: token agreement with its test translations). Nothing by default."""

    def distillation_loss(self, output, teacher_output, batch: Batch, distill: dict) -> torch.Tensor:
        """The distillation loss toward ``teacher_output`` with the run's ``distill`` block
        (temperature, weight, reduction); padding positions of sequences are masked."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def epoch_metrics(self, forward: Forward, split: str) -> dict[str, float]:
        """Cheap metrics of ``forward`` on ``split``, every epoch (``info.epoch_metric`` among them)."""
        raise NotImplementedError

    def final_metrics(self, model: nn.Module) -> tuple[dict, dict[str, str]]:
        """The result row's metric fields (``info.metrics``) for the final model, and its per-example
        test outputs as ``{file name: text}`` (read by the report's paired tests)."""
        raise NotImplementedError

    def example_input(self, batch_size: int) -> tuple:
        """Model inputs of ``batch_size`` test examples, for latency measurements."""
        raise NotImplementedError

    @classmethod
    def test_examples(cls, folder: Path):
        """``(inputs, labels)`` of the prepared test split in ``folder`` for the checks on saved models
        (claims 5 and 6, where ``info.weight_checks``); ``None`` when this kind has none or the folder
        holds none."""
        return None

    # ------------------------------------------------------------------ use (qd translate, qd classify)
    @classmethod
    def translate_sentences(cls, model: nn.Module, model_meta: dict, folder: Path, evaluation: dict,
                            sentences: list[str]) -> tuple[list[str], dict[int, str]]:
        """Translations of raw source ``sentences`` by ``model`` (built from ``model_meta``), with the
        tokenisation and vocabularies of the prepared ``folder`` and the search of the run's
        ``evaluation`` block: one output line per sentence, and the index of every refused sentence
        (its output empty) with the reason."""
        raise QdError(f"a {cls.info.kind} model does not translate sentences (its task adapter provides no "
                      "translate_sentences)")

    @classmethod
    def classify_images(cls, model: nn.Module, model_meta: dict, folder: Path, evaluation: dict,
                        images: list[Path]) -> tuple[torch.Tensor, list[str]]:
        """The logits ``(len(images), classes)`` of image files by ``model``, read as the prepared
        ``folder``'s evaluation reads its images (size, normalisation), and the names of the classes."""
        raise QdError(f"a {cls.info.kind} model does not classify images (its task adapter provides no "
                      "classify_images)")
