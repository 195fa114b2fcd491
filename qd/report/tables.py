"""Tables in the task's own layout (rows = methods, columns = student x bits, the size of the file on
disk beside each cell) and a size table; ``qd.report.paper`` holds the paper-layout tables."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from qd.io import atomic_write_text
from qd.methods.registry import BUILTIN


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
