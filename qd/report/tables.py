"""Tables in the task's own layout (rows = methods, columns = student x bits, the size of the file on
disk beside each cell) and a size table; ``qd.report.paper`` holds the paper-layout tables, which
:func:`write_task_tables` writes beside them.

Try: ``pytest tests/test_report.py -k "cells or layout"``.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from qd.io import atomic_write_text
from qd.methods.registry import BUILTIN
from qd.report import table_metrics
from qd.report.paper import PaperTargets, classification_layout, paper_join, translation_layout
from qd.tasks import TaskInfo


def human_bytes(n: float) -> str:
    """Bytes in decimal units, as the paper counts (1 MB = 10^6 bytes)."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``mean ± std (n=k)`` over k seeds, or the single value."""
    if n > 1 and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"
    return f"{mean:.{digits}f}"


def column_name(student: str, bits) -> str:
    return f"{student} · " + ("fp32" if pd.isna(bits) else f"{int(bits)}-bit")


def method_order(labels: pd.Series, methods: pd.Series) -> list[str]:
    rank = {m: i for i, m in enumerate(BUILTIN)}
    pairs = sorted(set(zip(methods, labels)), key=lambda p: (rank.get(p[0], len(rank)), p[1]))
    return list(dict.fromkeys(label for _, label in pairs))


def metric_cell(r, metrics: list[str]) -> str:
    """``primary [/ second metric] · size on disk`` of one aggregated row."""
    parts = []
    for i, m in enumerate(metrics):
        if f"{m}_mean" not in r._fields or pd.isna(getattr(r, f"{m}_mean")):
            continue
        v = mean_std(getattr(r, f"{m}_mean"), getattr(r, f"{m}_std"), r.n_seeds)
        parts.append(v if i == 0 else f"{v} {m}")
    return " / ".join(parts) + f" · {human_bytes(r.size_on_disk_mean)}"


def accuracy_table(agg: pd.DataFrame, task: str, students: list[str], metrics: list[str] | None = None) -> pd.DataFrame:
    """Rows = methods, columns = student x bits; each cell the task's metrics (accuracy; or BLEU and
    perplexity) and the size of the compressed file on disk."""
    metrics = metrics or ["accuracy"]
    a = agg[(agg["task"] == task) & agg["model"].isin(students)]
    cells = {}
    for r in a.itertuples():
        cells[(r.label, column_name(r.model, r.bits))] = metric_cell(r, metrics)
    bits = sorted({int(b) for b in a["bits"].dropna()})
    columns = [column_name(s, b) for s in students for b in [pd.NA, *bits]]
    columns = [c for c in columns if any(k[1] == c for k in cells)]
    rows = method_order(a["label"], a["method"])
    table = pd.DataFrame([[cells.get((r, c), "") for c in columns] for r in rows], index=rows, columns=columns)
    table.index.name = "method"
    return table


def size_table(agg: pd.DataFrame, task: str) -> pd.DataFrame:
    """Every model of the task: fp32 size, the paper's formula, the file on disk (both labelled:
    claims and figures use the bytes on disk), latency."""
    q = agg[agg["task"] == task]
    bits = q["huffman_bits_per_weight_mean"]
    out = pd.DataFrame({
        "model": q["model"], "method": q["label"], "bits": q["bits"],
        "fp32": q["size_fp32_mean"].map(human_bytes),
        "paper formula": q["size_analytic_mean"].map(human_bytes),
        "file on disk": q["size_on_disk_mean"].map(human_bytes),
        "disk / formula": (q["size_on_disk_mean"] / q["size_analytic_mean"]).map(lambda x: f"{x:.3f}"),
        "compression vs fp32": (q["size_fp32_mean"] / q["size_on_disk_mean"]).map(lambda x: f"{x:.1f}x"),
        "Huffman bits/weight": bits.map(lambda x: "" if pd.isna(x) else f"{x:.3f}"),
        "latency (ms)": (q["latency_median_ms_mean"] if "latency_median_ms_mean" in q else pd.Series(
            float("nan"), index=q.index)).map(lambda x: "" if pd.isna(x) else f"{x:.2f}"),
    })
    return out.reset_index(drop=True)


def write_table(df: pd.DataFrame, stem: Path, title: str, caption: str, index: bool = True) -> list[Path]:
    """``stem.md`` (title, caption, Markdown table) and ``stem.csv``."""
    md = f"# {title}\n\n{caption}\n\n{df.to_markdown(index=index)}\n"
    atomic_write_text(md, stem.with_suffix(".md"))
    atomic_write_text(df.to_csv(index=index), stem.with_suffix(".csv"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]


def write_task_tables(tables: Path, task: str, info: TaskInfo, agg: pd.DataFrame, paper: PaperTargets, dataset: str,
                      teacher: str, students: list[str], labels: dict) -> None:
    """A task's own-layout table of its table metrics and sizes, its size table, and its paper-layout table
    (the paper prints one metric per cell in blocks per student, several per cell with models as rows)."""
    metrics = list(table_metrics(info))
    write_table(accuracy_table(agg, task, students, metrics), tables / f"{task}_{info.primary}",
                f"{task}: {info.label} and model size",
                "Rows are methods, columns student x bits; each cell is the " + " / ".join(metrics) + " of the final "
                "quantized weights (mean ± std and number of seeds where there are several; one seed otherwise) and "
                "the size of the compressed model file on disk (tables/*_sizes.md puts the paper's formula beside it). "
                "Teacher: " + _teacher_line(agg, task, teacher, info.primary))
    write_table(size_table(agg, task), tables / f"{task}_sizes", f"{task}: model sizes and latency",
                "fp32 size; the paper's formula (Huffman-coded level indices + two fp32 scalars per bucket + "
                "fp32 for unquantized parameters); the bytes of the compressed file on disk (the same plus "
                "code table, headers, point tables and BatchNorm statistics), which claims and figures use; the "
                "Huffman mean code length; forward latency of the final model (simulated quantization: fp32 "
                "arithmetic, so a quantized model runs at its architecture's fp32 speed).", index=False)
    join = paper_join(agg, paper, dataset, task, metrics)
    stem = tables / f"{task}_paper"
    if paper.has(dataset):
        body = (classification_layout(join, students, teacher, labels, info.primary) if len(metrics) == 1
                else translation_layout(join, [teacher, *students], labels, tuple(metrics)))
        caption = (f"The paper's cells for dataset `{dataset}` (config/paper_targets.csv; NR = not retrieved) "
                   "beside ours: mean ± std over seeds (n = seeds) and the difference ours - paper. A cell we did not "
                   "run, or one the paper does not print, is blank.")
    else:
        body = f"The paper prints no numbers for dataset `{dataset}`: this preset keeps its own layout " \
               f"(tables/{task}_{info.primary}.md).\n"
        caption = ""
    text = "\n\n".join(x for x in (f"# {task}: the paper's numbers beside ours", caption, body.strip()) if x)
    atomic_write_text(text + "\n", stem.with_suffix(".md"))
    atomic_write_text(join.to_csv(index=False), stem.with_suffix(".csv"))


def _teacher_line(agg: pd.DataFrame, task: str, teacher: str, metric: str) -> str:
    t = agg[(agg["task"] == task) & (agg["model"] == teacher)]
    if t.empty:
        return "not run."
    r = t.iloc[0]
    return (f"{teacher}, {r[f'{metric}_mean']:.2f} with {int(r.params_mean):,} parameters "
            f"({r.size_fp32_mean / 1e6:.3f} MB fp32).")
