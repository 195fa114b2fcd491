"""The report: ``summary.csv``, tables, ``claims.md``/``claims.csv`` and figures from every finished run.

This package module stays import-light (the workflow reads ``report_files`` while building the DAG);
``qd.report.build`` does the work. Try: ``qd report --config config/config.yaml``.

What each task writes depends on its kind's description (``qd.tasks.task_info``): tables and figures
are named after the kind's primary metric (``accuracy``, ``bleu``); claims 5 and 6 (integer inference,
quantization noise) write their tables for kinds whose saved models they check (``weight_checks``).
The report knows task kinds only through those descriptions: :func:`task_infos` (from the config's
task blocks) and :func:`rows_info` (from result rows) are its two ways in.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from qd.tasks import DEFAULT_KIND, TaskInfo, task_info

RECORDS = ("summary.csv", "claims.md", "claims.csv")


def task_outputs(kind: str | TaskInfo, entry: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(tables, figures)`` a task of ``kind`` writes (names after ``<task>_``)."""
    info = kind if isinstance(kind, TaskInfo) else task_info(kind, entry)
    p = info.primary
    tables = (p, "sizes", "paper", "compare") + (("integer", "noise") if info.weight_checks else ())
    figures = (f"{p}_vs_bits", f"{p}_vs_size", "training_curves", "training_hours")
    return tables, figures


def _info(block) -> TaskInfo:
    if isinstance(block, TaskInfo):
        return block
    if isinstance(block, str):
        return task_info(block, None)
    block = block or {}
    return task_info(block.get("kind", DEFAULT_KIND), block.get("entry"))


def task_infos(tasks: Iterable[str] | Mapping) -> dict[str, TaskInfo]:
    """Task name -> its kind's description, from a mapping of names to the config's task blocks (their
    ``kind`` and, for a kind of its own file, ``entry``), to kinds, or to descriptions; or from a list of
    names (the default kind)."""
    if isinstance(tasks, Mapping):
        return {t: _info(v) for t, v in tasks.items()}
    return {t: task_info(DEFAULT_KIND, None) for t in tasks}


def rows_info(rows) -> TaskInfo:
    """The description of the kind of a task's result rows: their ``kind`` (rows written before kinds
    existed are the default kind) and, for a kind of its own file, their ``task_entry``."""
    kind = rows["kind"].iloc[0] if "kind" in rows and len(rows) and isinstance(rows["kind"].iloc[0], str) \
        else DEFAULT_KIND
    entry = rows["task_entry"].iloc[0] if "task_entry" in rows and len(rows) else None
    return task_info(kind, entry if isinstance(entry, str) else None)


def report_files(results: Path, figures: Path, tasks: Iterable[str] | Mapping,
                 depth_latency: bool = False, onnx: bool = False) -> list[Path]:
    """Every file ``build_report`` writes (the workflow declares them as outputs). ``tasks``: the
    config's ``tasks`` block (names to task blocks), or just the names of tasks of the default kind;
    ``onnx``: the runs were exported (``evaluation.onnx``), so each task has its ONNX table."""
    files = [results / name for name in RECORDS]
    if depth_latency:
        files += [results / "tables" / f"latency_depth.{ext}" for ext in ("md", "csv")]
        files += [figures / f"latency_depth.{ext}" for ext in ("png", "pdf")]
    for t, info in task_infos(tasks).items():
        tables, figs = task_outputs(info)
        files += [results / "tables" / f"{t}_{name}.{ext}" for name in tables + (("onnx",) if onnx else ())
                  for ext in ("md", "csv")]
        files += [figures / f"{t}_{name}.{ext}" for name in figs for ext in ("png", "pdf")]
    return files


def table_metrics(info: TaskInfo) -> tuple[str, ...]:
    """The metrics a table cell of this kind shows, primary first (a kind that names none: its primary)."""
    return tuple(info.table_metrics) or (info.primary,)
