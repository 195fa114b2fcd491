"""`qd diff`: a finished run beside its reference record, on small synthetic records whose differences
and verdict changes are checked by hand."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from qd.report.diff import FLIP, agreement, claim_agreement, main, run_diff

COLUMNS = ["task", "dataset", "model", "method", "bits", "bucket", "seed", "role", "kind", "accuracy", "bleu"]


def _write(folder: Path, rows: list[tuple], claims: list[tuple]) -> Path:
    folder.mkdir(parents=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "summary.csv", index=False)
    pd.DataFrame(claims, columns=["task", "claim", "verdict", "statement"]).to_csv(folder / "claims.csv", index=False)
    return folder


def _cls(model, method, bits, bucket, seed, acc, role="student"):
    return ("digits", "digits", model, method, bits, bucket, seed, role, "classification", acc, None)


def _bleu(model, method, bits, bucket, seed, bleu, role="student"):
    return ("numbers", "numbers", model, method, bits, bucket, seed, role, "translation", None, bleu)


@pytest.fixture
def records(tmp_path):
    reference = _write(tmp_path / "reference" / "demo" / "results", [
        _cls("teacher", "fp", None, None, 0, 98.5, role="teacher"),
        _cls("s1", "qd", 4, 256, 0, 96.0), _cls("s1", "qd", 4, 256, 1, 97.0),    # mean 96.5
        _cls("s1", "pm", 2, None, 0, 60.0),                                      # only in the reference
        _bleu("s1", "qd", 2, 256, 0, 21.25),
    ], [
        ("(preset)", "2a", "NOT COMPARABLE", "speed-up vs depth"),
        ("digits", "1", "PASS", "students match teachers"),
        ("digits", "3b", "PASS", "QD beats PM"),
        ("numbers", "3b", "INCONCLUSIVE", "QD beats PM"),
        ("numbers", "4b", "FAIL", "QD beats DQ at 2 bits"),
    ])
    mine = _write(tmp_path / "results" / "demo", [
        _cls("teacher", "fp", None, None, 0, 99.0, role="teacher"),
        _cls("s1", "qd", 4, 256, 0, 95.0), _cls("s1", "qd", 4, 256, 1, 95.5),    # mean 95.25
        _cls("s1", "dq", 2, 256, 0, 90.0),                                       # only in this run
        _bleu("s1", "qd", 2, 256, 0, 11.0),
    ], [
        ("(preset)", "2a", "NOT COMPARABLE", "speed-up vs depth"),
        ("digits", "1", "PASS", "students match teachers"),
        ("digits", "3b", "FAIL", "QD beats PM"),            # PASS -> FAIL: the flip
        ("numbers", "3b", "FAIL", "QD beats PM"),           # INCONCLUSIVE -> FAIL: differs
        ("numbers", "4b", "INCONCLUSIVE", "QD beats DQ at 2 bits"),
        ("numbers", "7", "PASS", "recurrent models"),       # only in this run
    ])
    return mine, reference


def test_cells_differ_by_hand_checked_amounts(records):
    mine, reference = records
    _, cells, _ = run_diff(mine, reference)
    by = {(r.task, r.model, r.method, None if pd.isna(r.bits) else int(r.bits)): r for r in cells.itertuples()}
    teacher = by[("digits", "teacher", "fp", None)]
    assert (teacher.metric, teacher.reference, teacher.run, teacher.difference) == ("accuracy", 98.5, 99.0, 0.5)
    qd4 = by[("digits", "s1", "qd", 4)]
    assert (qd4.reference, qd4.run) == (96.5, 95.25) and qd4.difference == pytest.approx(-1.25)
    assert qd4.bucket == 256
    bleu = by[("numbers", "s1", "qd", 2)]
    assert (bleu.metric, bleu.difference) == ("bleu", pytest.approx(-10.25))  # each task on its own primary
    assert pd.isna(by[("digits", "s1", "pm", 2)].run) and pd.isna(by[("digits", "s1", "pm", 2)].difference)
    assert pd.isna(by[("digits", "s1", "dq", 2)].reference)
    assert len(cells) == 5


def test_claims_agree_differ_and_a_pass_against_fail_is_flagged(records):
    mine, reference = records
    claims = claim_agreement(mine / "claims.csv", reference / "claims.csv").set_index(["task", "claim"])
    assert claims["agreement"].to_dict() == {
        ("(preset)", "2a"): "agree", ("digits", "1"): "agree", ("digits", "3b"): FLIP,
        ("numbers", "3b"): "differs", ("numbers", "4b"): "differs", ("numbers", "7"): "only in this run"}
    assert agreement("FAIL", "PASS") == FLIP and agreement("PASS", None) == "only in the reference"


def test_one_markdown_table_and_the_strict_exit(records, capsys, tmp_path):
    mine, reference = records
    out = tmp_path / "diff.md"
    assert main(["--results", str(mine), "--against", str(reference), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    assert "Verdicts: 2 of 5 agree, 2 differ (one side INCONCLUSIVE, NOT COMPARABLE or NOT TESTED), " \
           "1 PASS against FAIL: digits 3b." in text
    assert "largest -10.25 (numbers s1 Quantized distillation 2-bit, bucket 256: bleu)" in text
    assert "; 2 in one only." in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table[0] == "| task | claim or cell | reference | this run | this run - reference | verdicts |"
    assert len(table) == 2 + 6 + 5  # one table: head, the claims, the cells
    assert "| digits | claim 3b QD beats PM | PASS | FAIL | | **PASS vs FAIL** |" in table
    assert "| numbers | claim 3b QD beats PM | INCONCLUSIVE | FAIL | | differs |" in table
    assert "| digits | s1 Quantized distillation 4-bit, bucket 256: accuracy | 96.50 | 95.25 | -1.25 |  |" in table
    assert "| digits | teacher FP normal fp32: accuracy | 98.50 | 99.00 | +0.50 |  |" in table
    assert "| digits | s1 PM quantization (no bucket) 2-bit: accuracy | 60.00 |  |  | only in the reference |" in table
    assert main(["--results", str(mine), "--against", str(reference), "--strict"]) == 1
    assert main(["--results", str(reference), "--against", str(reference), "--strict"]) == 0
    assert main(["--results", str(tmp_path / "nothing"), "--against", str(reference)]) == 1
    assert "nothing/summary.csv does not exist" in capsys.readouterr().err


def test_the_committed_demo_reference_against_itself_agrees_everywhere():
    root = Path(__file__).resolve().parents[1]
    reference = root / "reference" / "demo" / "results"
    if not reference.exists():
        pytest.skip("no demo reference in this checkout")
    claims, cells, _ = run_diff(reference, reference)
    assert (claims["agreement"] == "agree").all() and (cells["difference"] == 0).all()
