"""Collect every finished run's ``metrics.json`` into one table and aggregate over seeds.

A run folder is ``<results>/<task>/<model>/<method>/<variant>/seed<k>/``. Rows written before task
kinds existed carry no ``kind``: they are of the default kind (``qd.tasks.DEFAULT_KIND``). The
per-example test outputs the paired tests read are the task kinds' business (``qd.tasks.outputs``).

Try: ``pytest tests/test_report_synthetic.py``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from qd.methods.registry import BUILTIN
from qd.report import rows_info
from qd.tasks import DEFAULT_KIND, TASKS

KEYS = ["task", "dataset", "model", "method", "bits", "bucket"]
# every metric of every task kind, plus sizes and latency; aggregate() keeps those present
METRICS = list(dict.fromkeys(
    [m for info in TASKS.values() for m in (info.primary, *info.metrics)]
    + ["size_fp32", "size_analytic", "size_on_disk", "huffman_bits_per_weight", "params", "latency_median_ms",
       "latency_iqr_ms", "n_test", "wall_time"]))
LATENCY_FILE = "latency.csv"
ONNX_RECORD = "onnx.json"  # a run's ONNX export and its agreement with PyTorch (qd.onnx.run)


def collect(results: Path) -> pd.DataFrame:
    """One row per run folder under ``results``, with ``kind`` and ``primary_metric`` filled in, and the
    timing job's ``latency.csv`` merged on ``run`` where it exists."""
    files = sorted(Path(results).glob("*/*/*/*/seed*/metrics.json"))
    rows = [run_time(json.loads(f.read_text()), f.with_name("history.csv")) | onnx_columns(f.with_name(ONNX_RECORD))
            for f in files]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if "kind" not in df:
        df["kind"] = DEFAULT_KIND
    df["kind"] = df["kind"].fillna(DEFAULT_KIND)
    try:
        primary = df["task"].map({t: rows_info(g).primary for t, g in df.groupby("task")})
    except ValueError as e:  # a kind neither built in nor named by the rows' task_entry
        raise ValueError(f"{results}: {e}") from e
    df["primary_metric"] = df["primary_metric"].fillna(primary) if "primary_metric" in df else primary
    df = merge_latency(df, Path(results) / LATENCY_FILE)
    for col in ("bits", "bucket"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df.sort_values(["task", "model", "method", "bits", "bucket", "seed"], na_position="first",
                          ignore_index=True)


def run_time(row: dict, history: Path) -> dict:
    """``row`` with ``wall_time`` at least the seconds its epochs took (``history.csv``, which every process
    that trained the run extends): a row written when a resumed run's time counted only its last process
    gets its earlier epochs back; a row that counts them already is unchanged."""
    if "wall_time" not in row or not history.exists():
        return row
    with history.open(newline="") as f:
        seconds = sum(float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds"))
    return row | {"wall_time": max(row["wall_time"], seconds)}


def onnx_columns(path: Path) -> dict:
    """The columns a run takes from its ``onnx.json`` (``qd onnx``; nothing where it has none): the ONNX
    file's size and opset, and the share of test examples on which it predicts what PyTorch's quantized
    model predicts; with an integer path (8-bit per-channel runs), the same of ``model.int8.onnx``."""
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    cols = {"onnx_bytes": record["size_onnx"], "onnx_opset": record["opset"],
            "onnx_agreement": record["agreement"]["agreement"], "onnx_compared": record["agreement"]["n"]}
    if "integer" in record:
        cols.update(onnx_integer_bytes=record["integer"]["size_onnx"],
                    onnx_integer_agreement=record["integer"]["agreement"]["agreement"])
    return cols


def merge_latency(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The timing job's latency columns (one row per run, timed with every core reserved) replace any
    the training jobs wrote."""
    if not path.exists():
        return df
    lat = pd.read_csv(path)
    if "run" not in lat:
        raise ValueError(f"{path}: no 'run' column (columns: {list(lat.columns)})")
    cols = [c for c in lat.columns if c != "run"]
    return df.drop(columns=[c for c in cols if c in df]).merge(lat, on="run", how="left")


def method_label(method: str, bucket, buckets_of_method: set, declared: str | None = None) -> str:
    """Table/figure label: the one the rows carry (``method_label``, resolved with the config's
    overrides when the run's spec was written), the registry's for rows without one; bucketing is named
    where a method ran with several bucket settings."""
    if isinstance(declared, str) and declared:
        base = declared
    else:
        base = BUILTIN[method].label if method in BUILTIN else method
    if len(buckets_of_method) > 1 or method == "pm":
        base += " (no bucket)" if pd.isna(bucket) else f" (bucket {int(bucket)})"
    return base


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and number of seeds of every metric, per task/model/method/bits/bucket."""
    present = [m for m in metric_columns(df) if m in df and pd.api.types.is_numeric_dtype(df[m])]
    g = df.groupby(KEYS, dropna=False, sort=False)[present]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("n_seeds"))
    out = out.reset_index()
    if "kind" in df:
        kinds = df.groupby("task")["kind"].first()
        out["kind"] = out["task"].map(kinds)
    buckets = df.groupby("method")["bucket"].apply(lambda s: set(s.fillna(-1).tolist())).to_dict()
    declared = df.groupby("method")["method_label"].first().to_dict() if "method_label" in df else {}
    out["label"] = [method_label(m, b, buckets[m], declared.get(m)) for m, b in zip(out["method"], out["bucket"])]
    # tables and legends list methods in the registry's order (baselines first), then bits
    rank = {m: i for i, m in enumerate(BUILTIN)}
    out["_rank"] = out["method"].map(lambda m: rank.get(m, len(rank)))
    out = out.sort_values(["task", "_rank", "label", "model", "bits"], na_position="first", kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """:data:`METRICS` and, after them, the metrics of any other kind among the rows (a kind of its own file)."""
    extra = []
    for _, g in df.groupby("task", sort=False) if "task" in df else ():
        info = rows_info(g)
        extra += [info.primary, *info.metrics]
    return list(dict.fromkeys(METRICS + extra))


def main_bucket(rows: pd.DataFrame, method: str) -> int | None:
    """The bucket size most configurations of ``method`` among ``rows`` (one task's) ran with: the one
    the claims and comparisons take where a method ran with several."""
    b = rows.loc[rows["method"] == method, "bucket"].dropna()
    return int(b.mode().iloc[0]) if len(b) else None


def labels_by_method(agg: pd.DataFrame) -> dict:
    """``(method, bucket) -> label`` for the measured cells, plus the paper's methods' names."""
    out = {("pm", None): method_label("pm", None, {-1, 256}), ("pm", 256): method_label("pm", 256, {-1, 256}),
           ("qd", 256): BUILTIN["qd"].label, ("dq", 256): BUILTIN["dq"].label}
    for m, b, label in zip(agg["method"], agg["bucket"], agg["label"]):
        out[(m, None if pd.isna(b) else int(b))] = label
    return out


def runs_of(df: pd.DataFrame, task: str, model: str, method: str, bits=None, bucket=None) -> pd.DataFrame:
    """The seeds of one configuration (rows of the summary), lowest seed first."""
    d = df[(df["task"] == task) & (df["model"] == model) & (df["method"] == method)]
    d = d[d["bits"].isna()] if bits is None else d[d["bits"] == bits]
    d = d[d["bucket"].isna()] if bucket is None or pd.isna(bucket) else d[d["bucket"] == bucket]
    return d.sort_values("seed")
