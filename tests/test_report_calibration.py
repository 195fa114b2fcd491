"""The BLEU run-to-run calibration: measured from runs at several seeds, read back per configuration,
the dataset's largest sd where a configuration was not measured over enough seeds, and the stated
conservative model where the dataset was never measured; the one-seed BLEU interval includes it."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from qd.report.calibration import CALIBRATION_FILE, measure, read, run_sd, write
from qd.report.paired import default_settings


def _run(root, method, bits, seed, bleu):
    variant = "fp32" if bits is None else f"b{bits}-d256"
    folder = root / "t" / "s" / method / variant / f"seed{seed}"
    folder.mkdir(parents=True)
    row = {"task": "t", "dataset": "ds", "model": "s", "method": method, "bits": bits,
           "bucket": None if bits is None else 256, "seed": seed, "bleu": bleu, "preset": "calib", "kind": "translation",
           "role": "student", "run": f"t/s/{method}/{variant}/seed{seed}", "code_version": "abc"}
    (folder / "metrics.json").write_text(json.dumps(row))


def test_measure_write_and_read(tmp_path):
    for seed, bleu in enumerate((20.0, 22.0, 24.0)):
        _run(tmp_path, "fp", None, seed, bleu)
    for seed, bleu in enumerate((10.0, 10.5)):
        _run(tmp_path, "qd", 2, seed, bleu)
    _run(tmp_path, "pm", 2, 0, 1.0)  # one seed: nothing to measure
    table = measure(tmp_path)
    assert len(table) == 2 and table.set_index("method").loc["fp", "bleu_sd"] == pytest.approx(2.0)
    out = tmp_path / "cal.csv"
    write(table, out)
    back = read(out)
    # a second dataset measured later keeps the first's rows; the header names each preset's command
    other = table.assign(dataset="ds2", preset="calib2", bleu_sd=table["bleu_sd"] * 2)
    write(other, out)
    text = out.read_text()
    assert ("#   python -m qd.report.calibration results/calib\n#   python -m qd.report.calibration results/calib2\n"
            in text) and "ds,s,qd,2,256,2," in text
    assert len(read(out)) == 4
    cfg = default_settings()
    sd, text = run_sd({"dataset": "ds", "model": "s", "method": "fp", "bits": None, "bucket": None}, cfg, back)
    assert sd == pytest.approx(2.0) and "over 3 seeds of this configuration" in text
    # two seeds only: the dataset's largest sd instead
    sd, text = run_sd({"dataset": "ds", "model": "s", "method": "qd", "bits": 2, "bucket": 256}, cfg, back)
    assert sd == pytest.approx(2.0) and "largest measured" in text
    sd, text = run_sd({"dataset": "other", "bleu": 30.0}, cfg, back)
    assert sd == pytest.approx(3.0) and "conservative model" in text and "no run of dataset `other`" in text
    assert run_sd({"dataset": "ds"}, {**cfg, "run_variance_bleu": "none"}, back) == (0.0, "")


def test_committed_file_is_readable():
    t = read(CALIBRATION_FILE)
    assert {"dataset", "model", "method", "bits", "bucket", "seeds", "bleu_sd"} <= set(t.columns)
    assert isinstance(t, pd.DataFrame) and (t["seeds"] >= 2).all()


def test_one_seed_bleu_interval_includes_the_run_to_run_model():
    from qd.report.stats import paired_bleu_bootstrap

    refs = [f"sentence number {i} is here" for i in range(40)]
    a = [refs]
    b = [[r if i % 3 else "nothing" for i, r in enumerate(refs)]]
    bare = paired_bleu_bootstrap(a, b, refs, 300, 0)
    wide = paired_bleu_bootstrap(a, b, refs, 300, 0, run_sd=(3.0, 3.0), run_model="calibrated, sd 3")
    assert wide.high - wide.low > bare.high - bare.low
    assert "calibrated, sd 3" in wide.variances and "test-set sampling" in wide.variances
