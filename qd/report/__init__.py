"""The report: ``summary.csv``, tables, ``claims.md`` and figures from every finished run.

This package module stays import-light (the workflow reads ``report_files`` while building the DAG);
``qd.report.build`` does the work. Try: ``qd report --config config/config.yaml``.
"""
from __future__ import annotations

from pathlib import Path

TABLES = ("accuracy", "sizes", "paper")
FIGURES = ("accuracy_vs_bits", "accuracy_vs_size", "training_curves")


def report_files(results: Path, figures: Path, tasks: list[str], depth_latency: bool = False) -> list[Path]:
    """Every file ``build_report`` writes (the workflow declares them as outputs)."""
    files = [results / "summary.csv", results / "claims.md"]
    if depth_latency:
        files += [results / "tables" / f"latency_depth.{ext}" for ext in ("md", "csv")]
        files += [figures / f"latency_depth.{ext}" for ext in ("png", "pdf")]
    for t in tasks:
        files += [results / "tables" / f"{t}_{name}.{ext}" for name in TABLES for ext in ("md", "csv")]
        files += [figures / f"{t}_{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")]
    return files
