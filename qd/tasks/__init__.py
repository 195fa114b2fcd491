"""Task adapters: everything that differs between image classification and translation.

A task *kind* (the config's ``tasks.<name>.kind``) names an adapter class (``qd.tasks.base.Task``):
its data as batches, how a model is built from the model spec and the data's metadata, the forward
pass and the loss on a batch, the distillation loss on a batch, evaluation, and an example input for
latency. The training engine, the methods, the run and the report speak only to the adapter.

This module stays torch-free: the workflow and the report read :data:`TASKS` (metric names and
directions) while building the DAG; :func:`load_task` imports an adapter only inside a job.

Try: ``python -c "from qd.tasks import TASKS; print(TASKS['classification'])"``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


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


TASKS = {
    "classification": TaskInfo("classification", "qd.tasks.classification:Classification", "accuracy", True,
                               "accuracy", True, ("accuracy", "top5", "test_loss", "val_accuracy"),
                               "test accuracy (%)"),
    "translation": TaskInfo("translation", "qd.tasks.translation:Translation", "bleu", True, "ppl", False,
                            ("bleu", "bleu_legacy", "ppl", "val_ppl", "token_agreement"), "test BLEU"),
}


def task_info(kind: str) -> TaskInfo:
    if kind not in TASKS:
        raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(TASKS)}")
    return TASKS[kind]


def load_task(kind: str):
    """The adapter class of ``kind`` (imports torch and the task's libraries)."""
    module, _, name = task_info(kind).entry.partition(":")
    return getattr(importlib.import_module(module), name)
