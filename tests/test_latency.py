"""The latency harness (qd/latency.py). No timed assertions: only what the harness reports."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import qd.latency
from qd.latency import depth_comparison, measure_latency

FIELDS = {"device", "batch", "threads", "median_ms", "iqr_ms", "repeats", "warmup"}


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(16, 4)
        self.calls = 0
        self.grad_enabled = []

    def forward(self, x):
        self.calls += 1
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.layer(x)


def test_reports_finite_positive_times_for_the_requested_repeats():
    model = Counting()
    row = measure_latency(model, torch.randn(8, 16), warmup=3, repeats=7, threads=1)
    assert set(row) == FIELDS
    assert (row["device"], row["batch"], row["threads"], row["repeats"], row["warmup"]) == ("cpu", 8, 1, 7, 3)
    assert math.isfinite(row["median_ms"]) and row["median_ms"] > 0
    assert math.isfinite(row["iqr_ms"]) and row["iqr_ms"] >= 0
    assert model.calls == 3 + 7
    assert not any(model.grad_enabled)  # inference mode: no autograd bookkeeping is timed


def test_median_and_iqr_are_those_of_the_timed_passes(monkeypatch):
    # fake clock: pass k takes k ms, so the 5 passes take 1..5 ms: median 3, quartiles 2 and 4
    ticks = iter(x / 1e3 for x in (0, 1, 10, 12, 20, 23, 30, 34, 40, 45))
    monkeypatch.setattr(qd.latency, "perf_counter", lambda: next(ticks))
    row = measure_latency(Counting(), torch.randn(2, 16), warmup=0, repeats=5)
    assert row["median_ms"] == pytest.approx(3.0)
    assert row["iqr_ms"] == pytest.approx(2.0)


def test_restores_training_mode_and_thread_count():
    model = Counting().train()
    before = torch.get_num_threads()
    measure_latency(model, torch.randn(1, 16), warmup=0, repeats=2, threads=1)
    assert model.training
    assert torch.get_num_threads() == before


def test_tuple_inputs_and_bad_repeats():
    class Pair(nn.Module):
        def forward(self, a, b):
            return a + b

    row = measure_latency(Pair(), (torch.ones(3, 2), torch.ones(3, 2)), warmup=1, repeats=2)
    assert row["batch"] == 3 and row["device"] == "cpu"
    with pytest.raises(ValueError):
        measure_latency(Pair(), (torch.ones(1), torch.ones(1)), repeats=0)


def test_depth_comparison_is_relative_to_the_reference():
    torch.manual_seed(0)
    models = {"shallow": nn.Sequential(nn.Linear(32, 32)),
              "deep": nn.Sequential(*[nn.Linear(32, 32) for _ in range(4)])}
    rows = depth_comparison(models, torch.randn(4, 32), warmup=1, repeats=5)
    assert [r["model"] for r in rows] == ["shallow", "deep"]
    assert rows[0]["relative_time"] == 1.0
    assert rows[1]["relative_time"] == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"])
    assert [r["params"] for r in rows] == [32 * 33, 4 * 32 * 33]
    with pytest.raises(KeyError):
        depth_comparison(models, torch.randn(4, 32), reference="missing")
