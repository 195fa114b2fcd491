"""The ONNX table of a task: each run's model as deployed outside PyTorch (``evaluation.onnx``).

One row per run (lowest seed of each configuration): the sizes of the ``.qda`` file, of the ONNX
file (weights stored as low-bit integers, ``docs/onnx.md``) and the paper's analytic size; the share of
test examples on which the ONNX model predicts what PyTorch's quantized model predicts; the latency
job's batch-1 medians of PyTorch and onnxruntime timed side by side, as a ratio; and, for 8-bit
per-channel runs, the same of onnxruntime's integer path. Nothing is written for a preset without ONNX.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qd.report.tables import write_table

COLUMNS = {  # summary column -> table column
    "model": "model", "method_label": "method", "bits": "bits", "bucket": "bucket",
    "size_on_disk": "qda bytes", "onnx_bytes": "onnx bytes", "size_analytic": "analytic bytes",
    "onnx_agreement": "agreement %", "onnx_compared": "examples",
    "onnx_torch_ms": "PyTorch ms", "onnx_ms": "onnxruntime ms", "onnx_over_torch": "onnxruntime / PyTorch",
    "onnx_integer_agreement": "integer agreement %", "onnx_integer_ms": "integer ms",
    "onnx_integer_over_torch": "integer / PyTorch",
}


def onnx_rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """The task's exported runs (lowest seed of each configuration) as table rows."""
    rows = df[(df["task"] == task) & df.get("onnx_agreement", pd.Series(dtype=float)).notna()]
    if rows.empty:
        return rows
    keys = ["model", "method", "bits", "bucket"]
    rows = rows.sort_values("seed").drop_duplicates(keys).sort_values(keys, na_position="first")
    rows = rows[[c for c in COLUMNS if c in rows]].dropna(axis=1, how="all")  # e.g. no integer path here
    for col in ("onnx_agreement", "onnx_integer_agreement"):
        if col in rows:
            rows[col] = (100 * rows[col]).round(2)  # percent of the test examples
    rows = rows.round({"size_analytic": 0, "onnx_torch_ms": 3, "onnx_ms": 3, "onnx_integer_ms": 3,
                       "onnx_over_torch": 2, "onnx_integer_over_torch": 2})
    return rows.astype(object).where(rows.notna(), "").rename(columns=COLUMNS)  # blank: not measured


def write_onnx_table(df: pd.DataFrame, task: str, tables: Path) -> list[Path]:
    rows = onnx_rows(df, task)
    if rows.empty:
        return []
    stacks = sorted({s for col in ("onnx_stack", "onnx_integer_stack") if col in df
                     for s in df.loc[df["task"] == task, col].dropna()})
    timed = ("; ".join(stacks) if stacks else "not timed (no latency job)")
    return write_table(rows, tables / f"{task}_onnx", f"{task}: the compressed models as ONNX",
                       "Sizes in bytes: the .qda file, the ONNX file (weights as low-bit integers with their scales) "
                       "and the paper's analytic size. Agreement: the share of test examples on which the ONNX model "
                       "predicts what PyTorch's quantized model predicts (argmax class; a translation's whole greedy "
                       "token sequence). Latency: batch-1 medians, PyTorch and onnxruntime timed side by side on one "
                       f"thread by the latency job. Stacks: {timed}.", index=False)
