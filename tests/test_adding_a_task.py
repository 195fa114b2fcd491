"""docs/adding-a-task.md as written: its task file (tests/fixtures/regression.py), copied into a package
of the test's own and named in a tiny config by ``kind`` + ``entry``, runs through the workflow (data,
teacher, students of four methods, latency, report) into summary.csv, the tables and claims.md, with
no other file of the suite edited."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import ROOT, workflow_copy
from test_adding_a_method import run_plugin

PAGE = ROOT / "docs" / "adding-a-task.md"
TASK_FILE = ROOT / "tests" / "fixtures" / "regression.py"
CONFIG = {
    "preset": "regression",
    "seeds": [0],
    "tasks": {"waves": {
        "kind": "regression", "entry": "my_tasks.regression:Regression",
        "dataset": {"name": "noisy-waves", "test_fraction": 0.2, "val_fraction": 0.1},
        "models": {"family": "mlp", "teacher": "teacher", "students": ["student"]},
        "distill": {"reduction": "mean"},
        "train": {"epochs": 3, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0,
                  "schedule": "constant"},
    }},
    "methods": {"fp": {}, "distill": {}, "pm": {}, "qd": {}},
    "quant": {"bits": [4]},
    "evaluation": {"latency": {"batch_size": 16, "warmup": 0, "repeats": 2}, "depth_latency": {"enabled": False}},
}


def test_the_page_shows_the_task_file():
    code = re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)
    assert code == TASK_FILE.read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("task"))
    return run_plugin(root, "my_tasks", {"regression.py": TASK_FILE.read_text()}, CONFIG, timeout=600)


def test_the_new_kind_reaches_the_summary(run):
    df = pd.read_csv(run / "summary.csv").set_index("run")
    assert sorted(df.index) == ["waves/student/distill/fp32/seed0", "waves/student/fp/fp32/seed0",
                                "waves/student/pm/b4-d256/seed0", "waves/student/pm/b4-nobucket/seed0",
                                "waves/student/qd/b4-d256/seed0", "waves/teacher/fp/fp32/seed0"]
    assert set(df["kind"]) == {"regression"} and set(df["task_entry"]) == {"my_tasks.regression:Regression"}
    assert set(df["primary_metric"]) == {"mse"}
    # the generated target's variance is above 1: a trained net's error is well below it, quantized too
    assert (df["mse"] < 0.8).all() and (df["mse"] > 0).all()
    qd_run, fp_run = df.loc["waves/student/qd/b4-d256/seed0"], df.loc["waves/student/fp/fp32/seed0"]
    assert qd_run["method_label"] == "Quantized distillation" and qd_run["size_analytic"] < fp_run["size_analytic"]
    assert bool(qd_run["uniform_grid"]) and qd_run["distill_reduction"] == "mean"
    spec = json.loads((run / qd_run.name / "spec.json").read_text())
    assert spec["distill"] == {"temperature": 2.0, "weight": 0.7, "reduction": "mean"}
    assert (run / qd_run.name / "test_predictions.csv").read_text().startswith("index,target,prediction\n")


def test_the_new_kind_reaches_the_tables_and_claims(run):
    tables = sorted(p.name for p in (run / "tables").iterdir())
    assert "waves_mse.md" in tables, tables
    table = (run / "tables" / "waves_mse.md").read_text()
    assert table.startswith("# waves: test MSE and model size")
    assert "| Quantized distillation " in table and "| PM quantization (bucket 256) " in table
    claims = (run / "claims.md").read_text()
    assert "## Task `waves` (regression, dataset `noisy-waves`, metric mse)" in claims
