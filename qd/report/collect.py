"""Collect every finished run's ``metrics.json`` into one table, and aggregate over seeds."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from qd.methods.registry import BUILTIN

KEYS = ["task", "dataset", "model", "method", "bits", "bucket"]
METRICS = ["accuracy", "top5", "val_accuracy", "size_fp32", "size_analytic", "size_on_disk", "huffman_bits_per_weight",
           "params", "latency_median_ms"]


def collect(results: Path) -> pd.DataFrame:
    """One row per run folder under ``results`` (``<task>/<model>/<method>/<variant>/seed<k>``)."""
    files = sorted(Path(results).glob("*/*/*/*/seed*/metrics.json"))
    rows = [json.loads(f.read_text()) for f in files]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("bits", "bucket"):
        df[col] = df[col].astype("Int64")
    return df.sort_values(["task", "model", "method", "bits", "bucket", "seed"], na_position="first",
                          ignore_index=True)


def method_label(method: str, bucket, buckets_of_method: set) -> str:
    """Table/figure label; bucketing is named where a method ran with several bucket settings."""
    base = BUILTIN[method].label if method in BUILTIN else method
    if len(buckets_of_method) > 1 or method == "pm":
        base += " (no bucket)" if pd.isna(bucket) else f" (bucket {int(bucket)})"
    return base


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and number of seeds of every metric, per task/model/method/bits/bucket."""
    present = [m for m in METRICS if m in df]
    g = df.groupby(KEYS, dropna=False, sort=False)[present]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("n_seeds"))
    out = out.reset_index()
    buckets = df.groupby("method")["bucket"].apply(lambda s: set(s.fillna(-1).tolist())).to_dict()
    out["label"] = [method_label(m, b, buckets[m]) for m, b in zip(out["method"], out["bucket"])]
    # tables and legends list methods in the registry's order (baselines first), then bits
    rank = {m: i for i, m in enumerate(BUILTIN)}
    out["_rank"] = out["method"].map(lambda m: rank.get(m, len(rank)))
    out = out.sort_values(["task", "_rank", "label", "model", "bits"], na_position="first", kind="stable")
    return out.drop(columns="_rank").reset_index(drop=True)
