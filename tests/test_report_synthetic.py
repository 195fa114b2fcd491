"""Synthetic result folders for the report's tests (no training): run folders with ``metrics.json``,
``history.csv`` and per-example test outputs written from chosen outcomes, and the checks that the
report reads them back as written. Other report tests import the writers from here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qd.report.collect import aggregate, collect
from qd.tasks.outputs import correctness, hypotheses

PRESET = "syn"


def variant(bits, bucket) -> str:
    if bits is None:
        return "fp32"
    return f"b{bits}-d{bucket}" if bucket is not None else f"b{bits}-nobucket"


def outcomes(u: np.ndarray, accuracy: float, rng: np.random.Generator | None = None, swaps: int = 0) -> np.ndarray:
    """0/1 correctness with accuracy ``accuracy`` (%), nested in ``u`` (a shared per-example difficulty,
    so two methods agree on most examples, as real ones do); ``swaps`` right/wrong pairs flipped at
    random add disagreement without changing the accuracy."""
    n = len(u)
    k = int(round(accuracy / 100 * n))
    c = np.zeros(n, bool)
    c[np.argsort(u)[:k]] = True
    if swaps:
        rng = rng or np.random.default_rng(0)
        right, wrong = np.flatnonzero(c), np.flatnonzero(~c)
        s = min(swaps, len(right), len(wrong))
        c[rng.choice(right, s, replace=False)] = False
        c[rng.choice(wrong, s, replace=False)] = True
    return c


def write_run(results: Path, task: str, model: str, method: str, bits=None, bucket=None, seed: int = 0,
              correct: np.ndarray | None = None, kind: str = "classification", role: str | None = None,
              dataset: str = "digits", size_on_disk: float = 1000.0, size_fp32: float = 4000.0, params: int = 1000,
              metrics: dict | None = None, hyps: list[str] | None = None, history: pd.DataFrame | None = None) -> str:
    """One finished run folder; returns its ``run`` id (the folder relative to ``results``)."""
    run = f"{task}/{model}/{method}/{variant(bits, bucket)}/seed{seed}"
    folder = Path(results) / run
    folder.mkdir(parents=True, exist_ok=True)
    role = role or ("teacher" if model == "teacher" else "student")
    row = {"preset": PRESET, "run": run, "role": role, "task": task, "kind": kind, "dataset": dataset,
           "model": model, "params": params, "method": method, "bits": bits, "bucket": bucket, "seed": seed,
           "primary_metric": "accuracy" if kind == "classification" else "bleu",
           "size_fp32": size_fp32, "size_analytic": size_on_disk * 0.9, "size_on_disk": size_on_disk,
           "huffman_bits_per_weight": None if bits is None else bits - 0.3, "epochs": 3,
           "code_version": "abc123", "device": "cpu (x86_64, 2 threads)", "torch": "2.14.1", "python": "3.11",
           "wall_time": 10.0}
    if correct is not None:
        n = len(correct)
        labels = np.arange(n) % 10
        pred = np.where(correct, labels, (labels + 1) % 10)
        pd.DataFrame({"index": np.arange(n), "label": labels, "prediction": pred}).to_csv(
            folder / "test_outputs.csv", index=False)
        row.update({"accuracy": 100 * float(np.mean(correct)), "top5": 100.0, "test_loss": 0.5,
                    "val_accuracy": 100 * float(np.mean(correct)), "n_test": n})
    if hyps is not None:
        (folder / "test_hypotheses.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    row.update(metrics or {})
    (folder / "metrics.json").write_text(json.dumps(row))
    h = history if history is not None else pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [1.0, 0.8, 0.6], "test_accuracy": [50.0, 60.0, row.get("accuracy", 70.0)]})
    h.to_csv(folder / "history.csv", index=False)
    return run


# the cells of a classification grid: (model, method, bits, bucket) -> accuracy (%)
def grid_cells(teacher=96.0, fp=88.0, distill=91.0, pm_b2=60.0, pm_nb2=50.0, pm_b4=88.0, pm_nb4=84.0, qd2=85.0,
               qd4=95.0, dq2=80.0, dq4=94.8, student="s") -> dict:
    return {("teacher", "fp", None, None): teacher, (student, "fp", None, None): fp,
            (student, "distill", None, None): distill,
            (student, "pm", 2, 256): pm_b2, (student, "pm", 2, None): pm_nb2,
            (student, "pm", 4, 256): pm_b4, (student, "pm", 4, None): pm_nb4,
            (student, "qd", 2, 256): qd2, (student, "qd", 4, 256): qd4,
            (student, "dq", 2, 256): dq2, (student, "dq", 4, 256): dq4}


def write_grid(results: Path, cells: dict, n: int = 2000, seeds=(0,), swaps: int = 0, task: str = "t",
               dataset: str = "digits", seed_spread: float = 0.0) -> None:
    """Every cell as runs with per-example outcomes over ``n`` shared test examples."""
    rng = np.random.default_rng(0)
    u = rng.random(n)
    for key, acc in cells.items():
        model, method, bits, bucket = key
        for s in seeds:
            a = acc + seed_spread * (s - (len(seeds) - 1) / 2)
            size = 400_000.0 if model == "teacher" else (1000.0 if bits is None else 250.0 * bits)
            write_run(results, task, model, method, bits, bucket, s, outcomes(u, a, rng, swaps), dataset=dataset,
                      size_on_disk=size, size_fp32=400_000.0 if model == "teacher" else 4000.0,
                      params=100_000 if model == "teacher" else 1000)


def test_collect_reads_back_what_was_written(tmp_path):
    write_grid(tmp_path, grid_cells(), n=500, seeds=(0, 1), seed_spread=1.0)
    df = collect(tmp_path)
    assert len(df) == 2 * 11 and set(df["kind"]) == {"classification"}
    assert (df["primary_metric"] == "accuracy").all()
    agg = aggregate(df)
    r = agg[(agg["model"] == "s") & (agg["method"] == "qd") & (agg["bits"] == 4)].iloc[0]
    assert r["n_seeds"] == 2 and r["accuracy_mean"] == 95.0
    # 94.5 and 95.5 % of 500 examples, rounded half to even: 94.4 and 95.6
    assert r["accuracy_std"] == pytest.approx(np.std([94.4, 95.6], ddof=1))
    runs = list(df.loc[(df["method"] == "qd") & (df["bits"] == 4), "run"])
    c = correctness(tmp_path, runs)
    assert c.shape == (2, 500) and list(100 * c.mean(1)) == pytest.approx([94.4, 95.6])


def test_rows_without_kind_are_classification_and_latency_merges(tmp_path):
    run = write_run(tmp_path, "t", "teacher", "fp", correct=np.ones(10, bool))
    row = json.loads((tmp_path / run / "metrics.json").read_text())
    del row["kind"], row["primary_metric"]
    (tmp_path / run / "metrics.json").write_text(json.dumps(row))
    pd.DataFrame({"run": [run], "latency_median_ms": [12.5], "latency_iqr_ms": [0.5]}).to_csv(
        tmp_path / "latency.csv", index=False)
    df = collect(tmp_path)
    assert df.loc[0, "kind"] == "classification" and df.loc[0, "primary_metric"] == "accuracy"
    assert df.loc[0, "latency_median_ms"] == 12.5


def test_hypotheses_round_trip(tmp_path):
    run = write_run(tmp_path, "mt", "teacher", "fp", kind="translation", hyps=["a b", "", "c"],
                    metrics={"bleu": 20.0, "ppl": 5.0})
    assert hypotheses(tmp_path, [run]) == [["a b", "", "c"]]
    assert collect(tmp_path).loc[0, "primary_metric"] == "bleu"
