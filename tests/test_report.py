"""Report logic on hand-made rows: aggregation over seeds, table cells, Pareto front, claim verdicts."""
from __future__ import annotations

import pandas as pd
import pytest

from qd.report.claims import FAIL, NOT_TESTED, PASS, check_claims
from qd.report.collect import aggregate
from qd.report.figures import pareto_front
from qd.report.tables import accuracy_table, human_bytes, mean_std

TOL = {"match_tolerance": 2.0, "competitive_tolerance": 1.0}


def _row(model, method, acc, bits=None, bucket=None, seed=0, size=1000.0, fp32=4000.0):
    return {"task": "t", "dataset": "d", "model": model, "method": method, "bits": bits, "bucket": bucket,
            "seed": seed, "accuracy": acc, "top5": 100.0, "val_accuracy": acc, "size_fp32": fp32,
            "size_analytic": size, "size_on_disk": size, "huffman_bits_per_weight": None if bits is None else bits - 0.5,
            "params": 1000, "latency_median_ms": 1.0}


def _frame(rows):
    df = pd.DataFrame(rows)
    for c in ("bits", "bucket"):
        df[c] = df[c].astype("Int64")
    return df


def _grid(qd2=90.0, dq2=85.0, qd4=95.0, dq4=94.5, pm_b=80.0, pm_nb=70.0, fp=88.0, distill=91.0, teacher=96.0):
    rows = [_row("teacher", "fp", teacher, fp32=400_000.0, size=400_000.0),
            _row("s", "fp", fp), _row("s", "distill", distill)]
    for bits, qd, dq in ((2, qd2, dq2), (4, qd4, dq4)):
        rows += [_row("s", "qd", qd, bits, 256), _row("s", "dq", dq, bits, 256),
                 _row("s", "pm", pm_b + bits, bits, 256), _row("s", "pm", pm_nb + bits, bits, None)]
    return aggregate(_frame(rows))


def test_aggregate_mean_std_and_seed_count():
    df = _frame([_row("s", "qd", a, 4, 256, seed=i) for i, a in enumerate([90.0, 92.0, 94.0])])
    agg = aggregate(df)
    r = agg.iloc[0]
    assert (r.accuracy_mean, r.accuracy_std, r.n_seeds) == (92.0, 2.0, 3)
    assert r.label == "Quantized distillation"


def test_labels_name_buckets_for_pm():
    agg = _grid()
    assert set(agg.loc[agg["method"] == "pm", "label"]) == {"PM quantization (bucket 256)", "PM quantization (no bucket)"}


def test_cells_and_units():
    assert mean_std(92.0, 2.0, 3) == "92.00 ± 2.00 (n=3)"
    assert mean_std(92.0, float("nan"), 1) == "92.00"
    assert [human_bytes(n) for n in (950, 1500, 2_500_000)] == ["950 B", "1.5 kB", "2.5 MB"]
    table = accuracy_table(_grid(), "t", ["s"])
    assert table.loc["Quantized distillation", "s · 4-bit"] == "95.00 · 1 kB"
    assert table.loc["FP normal", "s · fp32"] == "88.00 · 1 kB"
    assert list(table.columns) == ["s · fp32", "s · 2-bit", "s · 4-bit"]
    assert table.loc["FP normal", "s · 2-bit"] == ""


def test_pareto_front_by_hand():
    front = pareto_front(pd.Series([1.0, 2.0, 3.0, 4.0, 2.0]), pd.Series([50.0, 60.0, 55.0, 70.0, 40.0]))
    assert list(zip(front["size"], front["acc"])) == [(1.0, 50.0), (2.0, 60.0), (4.0, 70.0)]


def _verdicts(agg):
    return {c.number: c.verdict for c in check_claims(agg, "t", "teacher", ["s"], TOL)}


def test_claims_pass_on_the_papers_ordering():
    v = _verdicts(_grid())
    # teacher 96, QD 4-bit 95 within 2 points at 400x smaller; distill > fp; QD > PM; bucketed PM > unbucketed;
    # DQ 4-bit 94.5 >= QD - 1; QD 2-bit 90 >= DQ 85
    assert {k: v[k] for k in ("1", "3a", "3b", "3c", "4a", "4b")} == dict.fromkeys(("1", "3a", "3b", "3c", "4a", "4b"), PASS)
    assert v["2"] == v["7"] == NOT_TESTED


@pytest.mark.parametrize("change, claim", [
    ({"qd4": 93.0, "dq4": 92.0}, "1"),       # best 4-bit student 3 points below the teacher
    ({"distill": 87.0}, "3a"),                # distillation hurts
    ({"qd2": 81.0, "dq2": 80.0}, "3b"),       # PM (bucket) at 2 bits: 82 > QD 81
    ({"pm_nb": 90.0}, "3c"),                  # unbucketed PM beats bucketed
    ({"dq4": 93.5}, "4a"),                    # DQ 1.5 points below QD at 4 bits
    ({"dq2": 90.5}, "4b"),                    # DQ beats QD at 2 bits
])
def test_each_claim_fails_when_its_ordering_breaks(change, claim):
    assert _verdicts(_grid(**change))[claim] == FAIL


def test_claim_not_tested_without_its_runs():
    agg = _grid()
    v = _verdicts(agg[agg["method"] != "dq"])
    assert v["4a"] == v["4b"] == NOT_TESTED


def test_uniform_level_check_tells_quantized_from_raw_weights():
    import torch

    from qd.quant import quantize_uniform
    from qd.report.checks import levels_on_grid

    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    assert levels_on_grid(quantize_uniform(x, 2, 256), 2, 256) == (True, 4)
    assert levels_on_grid(quantize_uniform(x, 3, 256), 2, 256)[0] is False  # 8 levels are not on a 4-level grid
    assert levels_on_grid(x, 2, 256) == (False, 256)
