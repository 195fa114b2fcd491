"""The report: ``summary.csv``, tables, ``claims.md``/``claims.csv`` and figures from every finished run.

This package module stays import-light (the workflow reads ``report_files`` while building the DAG);
``qd.report.build`` does the work. Try: ``qd report --config config/config.yaml``.

What each task writes depends on its kind (``qd.tasks.TASKS``): tables and figures are named after
the kind's primary metric (``accuracy``, ``bleu``); claims 5 and 6 (integer inference, quantization
noise) read image test inputs and write their tables for classification tasks only.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from qd.tasks import TASKS

RECORDS = ("summary.csv", "claims.md", "claims.csv")


def task_outputs(kind: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(tables, figures)`` a task of ``kind`` writes (names after ``<task>_``)."""
    if kind not in TASKS:
        raise ValueError(f"unknown task kind {kind!r}; known: {', '.join(TASKS)}")
    p = TASKS[kind].primary
    tables = (p, "sizes", "paper", "compare") + (("integer", "noise") if kind == "classification" else ())
    figures = (f"{p}_vs_bits", f"{p}_vs_size", "training_curves")
    return tables, figures


def task_kinds(tasks: Iterable[str] | Mapping) -> dict[str, str]:
    """Task name -> kind, from a list of names (classification), or a mapping of names to the config's
    task blocks (their ``kind``) or to kinds."""
    if isinstance(tasks, Mapping):
        return {t: (v if isinstance(v, str) else (v or {}).get("kind", "classification")) for t, v in tasks.items()}
    return {t: "classification" for t in tasks}


def report_files(results: Path, figures: Path, tasks: Iterable[str] | Mapping,
                 depth_latency: bool = False) -> list[Path]:
    """Every file ``build_report`` writes (the workflow declares them as outputs). ``tasks``: the
    config's ``tasks`` block (names to task blocks), or just the names of classification tasks."""
    files = [results / name for name in RECORDS]
    if depth_latency:
        files += [results / "tables" / f"latency_depth.{ext}" for ext in ("md", "csv")]
        files += [figures / f"latency_depth.{ext}" for ext in ("png", "pdf")]
    for t, kind in task_kinds(tasks).items():
        tables, figs = task_outputs(kind)
        files += [results / "tables" / f"{t}_{name}.{ext}" for name in tables for ext in ("md", "csv")]
        files += [figures / f"{t}_{name}.{ext}" for name in figs for ext in ("png", "pdf")]
    return files
