"""Task kinds and datasets: what the workflow and the report know of them without importing torch.

A task *kind* (the config's ``tasks.<name>.kind``) names an adapter class (``qd.tasks.base.Task``):
its data as batches, how a model is built from the model spec and the data's metadata, the forward
pass and the loss on a batch, the distillation loss on a batch, evaluation, and an example input for
latency. The training engine, the methods, the run and the report speak only to the adapter, and read
every other fact of a kind (its metrics, model families, distillation reductions, the config keys its
runs read) from its :class:`TaskInfo`.

Built-in kinds are in :data:`TASKS`. A plug-in kind is one module of its own, named in the config by
``tasks.<name>.entry: "package.module:Class"``; the module declares ``INFO = TaskInfo(...)`` (and
``DATASETS``, the datasets it prepares itself) and :func:`task_info` imports it (docs/adding-a-task.md).

A dataset declares itself in the module that builds it (``qd/data/*.py``, ``qd/text/*.py``) with a
module-level literal ``DATASETS = {name: {...}}`` (the fields of :class:`DatasetInfo`), read here with
``ast`` without importing the module (those import torch): a new dataset of an existing kind is one
module and no other edit.

This module stays torch-free: the workflow and the report read it while building the DAG;
:func:`load_task` imports an adapter only inside a job.

Try: ``python -c "from qd.tasks import task_info, datasets; print(task_info('classification'), datasets())"``.
"""
from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TaskInfo:
    """What the workflow and the report need to know of a task kind without importing it."""

    kind: str
    entry: str  # "package.module:Class", a subclass of qd.tasks.base.Task
    primary: str  # the headline metric of a result row (tables, figures, claims)
    higher_is_better: bool
    epoch_metric: str  # evaluated every epoch on val and test; the plateau schedule reads it
    epoch_higher_is_better: bool
    metrics: tuple[str, ...]  # every metric a result row of this kind carries
    label: str  # how tables name the primary metric
    outputs: str = ""  # the per-example test outputs file a run of this kind writes (paired intervals)
    paired: str = ""  # "module:function": the paired interval of two lists of runs from their outputs
    table_metrics: tuple[str, ...] = ()  # the metrics a table cell shows (primary first)
    weight_checks: bool = False  # claims 5 and 6 run on its saved models and test inputs (adapter.test_examples)
    recurrent: bool = False  # its models are recurrent (claim 7: both methods on conv and recurrent models)
    families: tuple[str, ...] = ()  # the model families (tasks.<name>.models.family) its adapter builds
    reductions: tuple[str, ...] = ()  # the distillation reductions its distillation loss knows
    distill_keys: tuple[str, ...] = ("temperature", "weight", "reduction")  # of `distill` a run reads
    evaluation_keys: tuple[str, ...] = ("batch_size",)  # of `evaluation` a run reads
    distill_switches: tuple[str, ...] = ()  # of `distill` a run reads only when set (qd.config.DISTILL_SWITCHES)
    train_switches: tuple[str, ...] = ()  # of `train` a run reads only when set (qd.config.TRAIN_SWITCHES)


TASKS = {
    "classification": TaskInfo("classification", "qd.tasks.classification:Classification", "accuracy", True,
                               "accuracy", True, ("accuracy", "top5", "test_loss", "val_accuracy"),
                               "test accuracy (%)", outputs="test_outputs.csv",
                               paired="qd.tasks.outputs:paired_accuracy", table_metrics=("accuracy",),
                               weight_checks=True, families=("convnet", "resnet", "wrn"),
                               reductions=("legacy_mean", "batchmean"),
                               distill_keys=("temperature", "weight", "reduction", "cache_teacher"),
                               distill_switches=("teacher_views",)),
    "translation": TaskInfo("translation", "qd.tasks.translation:Translation", "bleu", True, "ppl", False,
                            ("bleu", "bleu_legacy", "ppl", "val_ppl", "token_agreement"), "test BLEU",
                            outputs="test_hypotheses.txt", paired="qd.tasks.outputs:paired_bleu",
                            table_metrics=("bleu", "ppl"), recurrent=True, families=("lstm",),
                            reductions=("sentence_sum", "token_mean"),
                            distill_keys=("temperature", "weight", "reduction", "mask_padding", "cache_teacher",
                                          "cache_topk"),
                            evaluation_keys=("batch_size", "beam", "decode_max_length", "replace_unk"),
                            train_switches=("loss_reduction",)),
}


DEFAULT_KIND = "classification"  # the schema's default kind; rows written before rows carried a kind


def _module(entry: str):
    return importlib.import_module(entry.partition(":")[0])


def task_info(kind: str, entry: str | None = None) -> TaskInfo:
    """The description of ``kind``: a built-in one, or the ``INFO`` of the plug-in module ``entry``
    ("package.module:Class") names."""
    if not entry or (kind in TASKS and TASKS[kind].entry == entry):
        if kind not in TASKS:
            raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(TASKS)} "
                             "(a task kind of your own needs tasks.<name>.entry = 'package.module:Class')")
        return TASKS[kind]
    info = getattr(_module(entry), "INFO", None)
    if not isinstance(info, TaskInfo) or info.kind != kind:
        raise ValueError(f"task entry {entry!r}: its module must declare INFO = TaskInfo({kind!r}, {entry!r}, ...)")
    return info


def load_task(kind: str, entry: str | None = None):
    """The adapter class of ``kind`` (imports torch and the task's libraries)."""
    module, _, name = task_info(kind, entry).entry.partition(":")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as its module declares it (``DATASETS = {name: {field: value}}``)."""

    name: str
    kind: str  # the task kind that reads it
    module: str  # the module that declares and builds it
    build: str  # the function of ``module`` that builds it from the dataset block
    keys: tuple[str, ...] = ()  # the dataset block's keys its preparation reads (others rerun nothing)
    streamed: bool = False  # decoded by DataLoader workers during training (reads evaluation.workers)
    sizes: tuple[int, int] | None = None  # official training and test examples (qd plan's epoch arithmetic)
    shape: tuple[int, int, int] | None = None  # image size, classes, training images per epoch (qd.cost)


# the folders whose modules may declare datasets: image datasets and translation corpora
DATASET_PACKAGES = ("qd.data", "qd.text")


def declared(path: Path) -> dict:
    """The literal ``DATASETS`` a module's source assigns at module level (``{}`` if none); read with
    ``ast`` so that listing the datasets imports none of their libraries."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DATASETS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _dataset(name: str, module: str, fields: dict) -> DatasetInfo:
    tuples = {k: tuple(v) for k, v in fields.items() if k in ("keys", "sizes", "shape") and v is not None}
    return DatasetInfo(name=name, module=module, **{**fields, **tuples})


@functools.cache
def builtin_datasets() -> dict[str, DatasetInfo]:
    root = Path(__file__).resolve().parents[1]
    found = {}
    for package in DATASET_PACKAGES:
        for path in sorted((root / package.partition(".")[2]).glob("*.py")):
            module = f"{package}.{path.stem}" if path.stem != "__init__" else package
            for name, fields in declared(path).items():
                found[name] = _dataset(name, module, fields)
    return found


def datasets(kind: str | None = None, entry: str | None = None) -> dict[str, DatasetInfo]:
    """Every dataset (of ``kind``): the built-in modules' and those a plug-in kind's module declares."""
    found = dict(builtin_datasets())
    if entry and kind not in TASKS:
        module = _module(entry)
        found.update({n: _dataset(n, module.__name__, f) for n, f in getattr(module, "DATASETS", {}).items()})
    return {n: d for n, d in found.items() if kind is None or d.kind == kind}


def dataset_info(name: str, kind: str | None = None, entry: str | None = None) -> DatasetInfo:
    known = datasets(kind, entry)
    if name not in known:
        what = f"a {kind} dataset" if kind else "a dataset"
        raise ValueError(f"{name!r} is not {what}; known: {', '.join(known)}")
    return known[name]


def dataset_builder(name: str, kind: str | None = None, entry: str | None = None):
    """The function that builds the dataset ``name`` (imports its module: torch and its loaders); what
    it takes and returns is its kind's business (splits for classification, a raw corpus for translation)."""
    d = dataset_info(name, kind, entry)
    return getattr(importlib.import_module(d.module), d.build)
