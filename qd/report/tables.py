"""Tables: the paper's CIFAR-10 layout (rows = methods, columns = student x bits, sizes beside
accuracies), a size table, and the paper's own numbers side by side with ours."""
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


def accuracy_table(agg: pd.DataFrame, task: str, students: list[str]) -> pd.DataFrame:
    """Rows = methods, columns = student x bits; each cell 'accuracy % · size of the file on disk'."""
    a = agg[(agg["task"] == task) & agg["model"].isin(students)]
    cells = {}
    for r in a.itertuples():
        acc = mean_std(r.accuracy_mean, r.accuracy_std, r.n_seeds)
        cells[(r.label, column_name(r.model, r.bits))] = f"{acc} · {human_bytes(r.size_on_disk_mean)}"
    bits = sorted({int(b) for b in a["bits"].dropna()})
    columns = [column_name(s, b) for s in students for b in [pd.NA, *bits]]
    columns = [c for c in columns if any(k[1] == c for k in cells)]
    rows = method_order(a["label"], a["method"])
    table = pd.DataFrame([[cells.get((r, c), "") for c in columns] for r in rows], index=rows, columns=columns)
    table.index.name = "method"
    return table


def size_table(agg: pd.DataFrame, task: str) -> pd.DataFrame:
    """Every model of the task: fp32 size, the paper's formula, the file on disk, latency."""
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
        "latency (ms)": q["latency_median_ms_mean"].map(lambda x: f"{x:.2f}"),
    })
    return out.reset_index(drop=True)


def read_targets(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    for col in ("bits", "bucket"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype("Int64")
    return t


def paper_comparison(agg: pd.DataFrame, targets: pd.DataFrame, dataset: str, task: str) -> pd.DataFrame:
    """The paper's cells for ``dataset`` with our measured value beside each (blank where not run)."""
    t = targets[targets["dataset"] == dataset]
    a = agg[agg["task"] == task]
    measured = []
    for r in t.itertuples():
        m = a[(a["model"] == r.model) & (a["method"] == r.method)
              & _same(a["bits"], r.bits) & _same(a["bucket"], r.bucket)]
        if r.metric == "accuracy" and len(m) == 1:
            m = m.iloc[0]
            measured.append(mean_std(m.accuracy_mean, m.accuracy_std, m.n_seeds))
        else:
            measured.append("")
    return pd.DataFrame({"table": t["table"], "model": t["model"], "method": t["method"], "bits": t["bits"],
                         "bucket": t["bucket"], "metric": t["metric"], "paper": t["value"],
                         "measured here": measured, "source": t["source"], "note": t["note"]})


def _same(col: pd.Series, value) -> pd.Series:
    return col.isna() if pd.isna(value) else (col == value)


def write_table(df: pd.DataFrame, stem: Path, title: str, caption: str, index: bool = True) -> list[Path]:
    """``stem.md`` (title, caption, Markdown table) and ``stem.csv``."""
    md = f"# {title}\n\n{caption}\n\n{df.to_markdown(index=index)}\n"
    atomic_write_text(md, stem.with_suffix(".md"))
    atomic_write_text(df.to_csv(index=index), stem.with_suffix(".csv"))
    return [stem.with_suffix(".md"), stem.with_suffix(".csv")]
