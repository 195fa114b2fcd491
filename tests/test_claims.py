"""Claim checks on synthetic result folders: each claim PASSes on the paper's ordering, FAILs when its
ordering breaks, comes out INCONCLUSIVE when the difference is within the noise of the test set, and
is NOT COMPARABLE when the models it rests on are far below the paper's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_report_synthetic import grid_cells, write_grid, write_run

from qd.report.build import report_settings
from qd.report.claims.base import NOT_COMPARABLE, NOT_TESTED, Evidence
from qd.report.claims.page import claims_frame, claims_markdown
from qd.report.claims.recurrent import claim_recurrent
from qd.report.claims.registry import check_claims
from qd.report.claims.speed import claim_depth_speed, claim_trained_speed
from qd.report.collect import aggregate, collect
from qd.report.paper import PaperTargets
from qd.report.stats import FAIL, INCONCLUSIVE, PASS

ROOT = Path(__file__).resolve().parents[1]
TARGETS = PaperTargets.read(ROOT / "config" / "paper_targets.csv")
# the claims' logic on two trained models' outputs: run-to-run variance is tested on its own (test_claims_variance.py)
CFG = {**report_settings(None), "bootstrap_samples": 1000, "run_variance_accuracy": "none", "run_variance_bleu": "none"}
ACCURACY_CLAIMS = ("1", "3a", "3b", "3c", "4a", "4b")


def _evidence(results: Path, students=("s",), task="t") -> Evidence:
    df = collect(results)
    return Evidence(df, aggregate(df), task, "teacher", list(students), results, TARGETS, CFG)


def _verdicts(results: Path, students=("s",)) -> dict:
    return {c.number: c.verdict for c in check_claims(_evidence(results, students))}


def test_claims_pass_on_the_papers_ordering(tmp_path):
    write_grid(tmp_path, grid_cells(dq4=94.9))
    v = _verdicts(tmp_path)
    assert {k: v[k] for k in ACCURACY_CLAIMS} == dict.fromkeys(ACCURACY_CLAIMS, PASS)
    assert v["2"] == v["5"] == v["6"] == v["7"] == NOT_TESTED


@pytest.mark.parametrize("change, claim", [
    ({"qd4": 92.0, "dq4": 91.5}, "1"),        # best 4-bit student 4 points below the teacher
    ({"distill": 86.0}, "3a"),                # distillation hurts
    ({"qd2": 65.0}, "3b"),                    # QD only 5 points above PM at 2 bits: under the 10-point threshold
    ({"pm_nb4": 90.0}, "3c"),                 # unbucketed PM beats bucketed at 4 bits
    ({"dq4": 93.5}, "4a"),                    # DQ 1.5 points below QD at 4 bits
    ({"dq2": 87.0}, "4b"),                    # DQ beats QD at 2 bits
])
def test_each_claim_fails_when_its_ordering_breaks(tmp_path, change, claim):
    write_grid(tmp_path, grid_cells(**{"dq4": 94.9, **change}))
    assert _verdicts(tmp_path)[claim] == FAIL


@pytest.mark.parametrize("change, claim", [
    ({"qd4": 94.1, "dq4": 94.0}, "1"),        # 1.9 below the teacher, tolerance 2: within the noise
    ({"distill": 88.2}, "3a"),                # +0.2 with disagreeing examples
    ({"pm_nb4": 87.8}, "3c"),
    ({"dq4": 94.6}, "4a"),                    # -0.4 against a tolerance of 0.5
    ({"dq2": 84.8}, "4b"),
])
def test_a_difference_within_the_noise_is_inconclusive(tmp_path, change, claim):
    write_grid(tmp_path, grid_cells(**{"dq4": 94.9, **change}), n=2000, swaps=60)
    assert _verdicts(tmp_path)[claim] == INCONCLUSIVE


def test_one_seed_difference_that_a_plain_comparison_would_call(tmp_path):
    """+0.3 points on 359 examples (one image) with disagreeing predictions: the old check said PASS."""
    write_grid(tmp_path, grid_cells(dq4=94.9, fp=90.0, distill=90.3), n=359, swaps=10)
    ev = _evidence(tmp_path)
    c = next(c for c in check_claims(ev) if c.number == "3a")
    assert c.verdict == INCONCLUSIVE
    cell = c.cells[0]
    assert cell.interval.low < 0 < cell.interval.high and cell.interval.n_examples == 359
    assert "359 test examples" in c.rests_on() and "1 vs 1" in c.rests_on()


def test_seeds_enter_the_interval_and_the_claims_page(tmp_path):
    write_grid(tmp_path, grid_cells(dq4=94.9), n=1000, seeds=(0, 1, 2), seed_spread=0.5)
    claims = check_claims(_evidence(tmp_path))
    c = next(c for c in claims if c.number == "3a")
    assert c.cells[0].interval.seeds_a == 3 and "3 vs 3" in c.rests_on()
    md = claims_markdown({"t": claims}, "syn", CFG, {"t": {"kind": "classification", "dataset": "digits",
                                                           "metric": "accuracy"}})
    assert "| 3a |" in md and "3 vs 3" in md and "1,000 test examples" in md


def _cifar_grid(teacher, s1_fp, s1_distill, deeper_fp, deeper_distill):
    """Paper-sized accuracies for student1 and the deeper student (Tables A and B)."""
    cells = {("teacher", "fp", None, None): teacher,
             ("student1", "fp", None, None): s1_fp, ("student1", "distill", None, None): s1_distill,
             ("deeper", "fp", None, None): deeper_fp, ("deeper", "distill", None, None): deeper_distill}
    for model, pm, qd in (("student1", 87.2, 88.0), ("deeper", 92.3, 92.2)):
        cells[(model, "pm", 4, 256)] = pm
        cells[(model, "qd", 4, 256)] = qd
    return cells


def test_far_from_the_paper_is_not_comparable(tmp_path):
    # the case: a 51.3% teacher (paper 89.71%) and a 59.2% distilled student 1 beating it
    write_grid(tmp_path, _cifar_grid(51.3, 55.0, 59.2, 60.0, 61.0), dataset="cifar10")
    claims = {c.number: c for c in check_claims(_evidence(tmp_path, ("student1",)))}
    c = claims["3a"]
    assert c.verdict == NOT_COMPARABLE and c.measured == PASS
    assert any("teacher fp: ours 51.30 vs paper 89.71" in line and "below the paper's" in line for line in c.models)
    md = claims_markdown({"t": list(claims.values())}, "syn", CFG, {})
    assert "**NOT COMPARABLE** (measured: PASS)" in md


def test_a_teacher_below_the_paper_gates_only_the_claim_that_compares_against_it(tmp_path):
    # the teacher 7.7 points under the paper's (gate: 5), student 1 within 1 point of its cells (84.5, 88.8):
    # the student claims keep their measured verdicts and list the teacher's gap; claim 1 (students against
    # the teacher) is gated by it
    cells = _cifar_grid(82.0, 84.0, 88.5, 93.0, 92.5)
    cells[("student1", "qd", 4, 256)] = 83.5
    write_grid(tmp_path, cells, dataset="cifar10")
    claims = {c.number: c for c in check_claims(_evidence(tmp_path, ("student1",)))}
    c = claims["3a"]
    assert c.verdict == c.measured == PASS
    teacher = next(line for line in c.models if line.startswith("teacher fp"))
    assert "82.00 vs paper 89.71 (-7.71): more than 5 points below the paper's (not gating" in teacher
    assert any(line.startswith("student1 distill: ours 88.50 vs paper 88.80") for line in c.models)
    assert claims["1"].verdict == NOT_COMPARABLE and claims["1"].cells
    # the same grid with student 1's normal model 6 points under the paper's: 3a is gated by it
    cells[("student1", "fp", None, None)] = 78.4
    write_grid(tmp_path, cells, dataset="cifar10")
    c = next(c for c in check_claims(_evidence(tmp_path, ("student1",))) if c.number == "3a")
    assert c.verdict == NOT_COMPARABLE and c.measured == PASS


def test_the_papers_counter_case_is_shown_and_left_out(tmp_path):
    # paper: distillation helps student 1 (84.5 -> 88.8) but not the deeper student (93.22 -> 92.6)
    write_grid(tmp_path, _cifar_grid(89.5, 84.0, 88.5, 93.0, 92.5), dataset="cifar10")
    claims = {c.number: c for c in check_claims(_evidence(tmp_path, ("student1", "deeper")))}
    c = claims["3a"]
    assert c.verdict == PASS  # student 1 passes; the deeper student's FAIL matches the paper's own table
    deeper = next(cell for cell in c.cells if cell.where == "deeper")
    assert deeper.counter_case and deeper.verdict == FAIL and deeper.paper == pytest.approx(92.6 - 93.22)
    assert "cifar10 deeper (-0.62)" in c.caveat
    # QD below PM at 4 bits on the deeper student: the paper's own table (92.17 < 92.30)
    assert "cifar10 deeper (-0.13)" in claims["3b"].caveat
    assert "cifar10 student1 +0.82" in claims["3b"].paper


def test_claim_texts_quote_the_papers_numbers_and_thresholds(tmp_path):
    write_grid(tmp_path, grid_cells(dq4=94.9))
    claims = {c.number: c for c in check_claims(_evidence(tmp_path))}
    assert "`report.match_tolerance`" in claims["1"].test and "2 points" in claims["1"].test
    assert "cifar100 wrn-28-10 77.21 vs wrn-16-10 QD 4-bit 76.31 (-0.90, 17.8x smaller)" in claims["1"].paper
    assert "DQ wins" in claims["4b"].caveat and "cifar100 wrn-16-10 (-21.48)" in claims["4b"].caveat
    frame = claims_frame({"t": list(claims.values())})
    row = frame[frame["claim"] == "1"].iloc[0]
    assert row["verdict"] == PASS and row["threshold"] == -2.0 and row["low"] <= row["estimate"] <= row["high"]


# ---------------------------------------------------------------------- claim 2
def _depth_csv(r34, r18, r2x, iqr=1.0):
    rows = [("ResNet-34", 34, 1.0, r34), ("ResNet-18", 18, 1.0, r18), ("2xResNet-18", 18, 2.0, r2x)]
    return pd.DataFrame([{"group": "imagenet", "model": m, "depth": d, "width": w, "params": 1, "median_ms": t,
                          "iqr_ms": iqr, "relative_time": t / r34, "device": "cpu", "threads": 1, "batch": 1}
                         for m, d, w, t in rows])


@pytest.mark.parametrize("times, expected", [
    ((70.0, 37.0, 40.0, 1.0), (PASS, PASS)),          # 1.89x speed-up (threshold 0.75 x 1.89 = 1.42); 1.08x wide
    ((70.0, 60.0, 200.0, 1.0), (FAIL, FAIL)),         # 1.17x; 3.3x
    ((70.0, 48.0, 60.0, 8.0), (INCONCLUSIVE, INCONCLUSIVE)),  # 1.46x within the IQRs of 1.42; 1.25 inside
])
def test_depth_speed_claims(times, expected):
    """Judged on CUDA; on a CPU NOT COMPARABLE: device, with the measured verdict beside it."""
    lat = _depth_csv(*times)
    a, b = claim_depth_speed(lat, TARGETS, CFG)
    assert (a.verdict, b.verdict) == (NOT_COMPARABLE, NOT_COMPARABLE) and (a.measured, b.measured) == expected
    assert any("NOT COMPARABLE: device `cpu`" in e for e in a.evidence)
    a, b = claim_depth_speed(lat.assign(device="cuda:0 (NVIDIA H100)"), TARGETS, CFG)
    assert (a.verdict, b.verdict) == (a.measured, b.measured) == expected
    assert "263 s vs 169 s = 1.56x" in a.paper and "169 s vs 169 s" in b.paper


@pytest.mark.parametrize("student_ms, expected", [(2.0, PASS), (9.0, FAIL), (7.2, INCONCLUSIVE)])
def test_trained_speed_claim(tmp_path, student_ms, expected):
    n = 100
    ok = np.ones(n, bool)
    write_run(tmp_path, "t", "teacher", "fp", correct=ok, metrics={"latency_median_ms": 10.0, "latency_iqr_ms": 0.4})
    write_run(tmp_path, "t", "s", "fp", correct=ok, metrics={"latency_median_ms": student_ms, "latency_iqr_ms": 0.4})
    # depth ratio 11/6 = 1.83: holds at a speed-up >= 0.75 x 1.83 = 1.375 (student at most 7.27 ms)
    c = claim_trained_speed(_evidence(tmp_path), {"teacher": 11, "s": 6})
    assert c.verdict == expected


# ---------------------------------------------------------------------- claim 7
SENTENCES = [f"the {w} dog number {i} ran across the green field quickly" for i, w in
             enumerate(["big", "small", "old", "young", "brown", "white"] * 20)]


def _translation(results: Path, qd_hyps, dq_hyps):
    import sacrebleu

    refs = SENTENCES
    folder = results / "mt" / "data"
    folder.mkdir(parents=True)
    (folder / "test_references.txt").write_text("\n".join(refs) + "\n")
    distilled = [r if i % 4 else r.replace("quickly", "fast") for i, r in enumerate(refs)]
    for model, method, bits, hyps in (("teacher", "fp", None, refs), ("s", "distill", None, distilled),
                                      ("s", "qd", 4, qd_hyps(distilled)), ("s", "dq", 4, dq_hyps(distilled))):
        bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
        write_run(results, "mt", model, method, bits, 256 if bits else None, kind="translation", dataset="numbers",
                  hyps=hyps, metrics={"bleu": bleu, "ppl": 3.0, "n_test": len(hyps)})
    df = collect(results)
    return Evidence(df, aggregate(df), "mt", "teacher", ["s"], results, TARGETS, {**CFG, "bootstrap_samples": 400},
                    folder)


def _damage(every: int, how=lambda s: s.replace("green field", "meadow")):
    return lambda hyps: [how(h) if i % every == 0 else h for i, h in enumerate(hyps)]


@pytest.mark.parametrize("qd, dq, expected", [
    (lambda h: list(h), lambda h: list(h), PASS),                  # both methods as good as FP distilled
    (_damage(1, lambda s: " ".join(s.split()[:4])), lambda h: list(h), FAIL),  # QD truncates every sentence
    (_damage(40), _damage(40), INCONCLUSIVE),                      # 3 sentences of 120 changed: about -1 BLEU
])
def test_recurrent_claim(tmp_path, qd, dq, expected):
    ev = _translation(tmp_path, qd, dq)
    c = claim_recurrent(ev)
    assert c.verdict == expected, [cell.line() for cell in c.cells]
    assert all("sacreBLEU" in cell.interval.test for cell in c.cells)
    claims = {x.number: x for x in check_claims(ev)}
    assert claims["7"].verdict == expected and claims["5"].verdict == NOT_TESTED


# ---------------------------------------------------------------------- one home for each fact
def test_claims_and_compare_share_one_paired_interval(tmp_path, monkeypatch):
    """The claims' cells and ``qd compare`` both pair runs through the task kind's one function, and give
    the same interval for the same two configurations."""
    import qd.tasks.outputs as outputs
    from qd.report.compare import compare_method, verdict_word
    from qd.report.paired import paired_interval
    from qd.tasks import task_info

    write_grid(tmp_path, {**grid_cells(dq4=94.9), ("s", "lsq", 4, 256): 93.0}, n=400)
    calls = []
    real = outputs.paired_accuracy
    monkeypatch.setattr(outputs, "paired_accuracy", lambda *a: calls.append(a[1:3]) or real(*a))
    ev = _evidence(tmp_path)
    from_claims = ev.compare(("s", "lsq", 4, 256), ("s", "qd", 4, 256))
    row = compare_method(tmp_path, "lsq").iloc[0]
    lsq, qd = ["t/s/lsq/b4-d256/seed0"], ["t/s/qd/b4-d256/seed0"]
    # once for the claim's cell, then once per baseline (PM at its main bucket, QD, DQ) for the comparison
    assert calls == [(lsq, qd), (lsq, ["t/s/pm/b4-d256/seed0"]), (lsq, qd), (lsq, ["t/s/dq/b4-d256/seed0"])]
    direct = paired_interval(task_info("classification"), tmp_path, lsq, qd, None, CFG["bootstrap_samples"],
                             CFG["bootstrap_seed"], CFG["confidence"])
    assert from_claims == direct and from_claims.estimate == pytest.approx(93.0 - 95.0)
    # the patched function takes no settings: both sides use the schema's defaults (the binomial run-to-run model)
    assert "binomial" in direct.variances
    compared = paired_interval(task_info("classification"), tmp_path, lsq, qd, None)  # qd compare: the defaults
    assert row["vs qd"] == f"{verdict_word(compared)} [{compared.low:+.2f}, {compared.high:+.2f}]"
    assert row["qd diff"] == pytest.approx(direct.estimate)


def test_each_statement_has_one_home(tmp_path):
    """Every claim, tested or not, carries its registered statement: claims.md and claims.csv rows of a
    classification task (2, 5, 6, 7 untested) and of a translation task (7 tested) say the same words."""
    from qd.report.claims.registry import CLAIMS, spec_of

    write_grid(tmp_path / "c", grid_cells(dq4=94.9))
    per_task = {"t": check_claims(_evidence(tmp_path / "c"))}
    per_task["mt"] = check_claims(_translation(tmp_path / "m", lambda h: list(h), lambda h: list(h)))
    md = claims_markdown(per_task, "syn", CFG, {})
    frame = claims_frame(per_task)
    seen = set()
    for task, claims in per_task.items():
        for c in claims:
            assert c.statement == spec_of(c.number).statement
            assert f"| {c.number} | {c.statement} |" in md
            seen.add((c.number, c.verdict == NOT_TESTED))
    assert {("5", True), ("6", True), ("7", True), ("7", False), ("1", False)} <= seen
    assert set(frame.groupby("claim")["statement"].nunique()) == {1}
    assert len({s.statement for s in CLAIMS}) == len(CLAIMS) and len({s.number for s in CLAIMS}) == len(CLAIMS)
    # every threshold a claim names is a setting of the report block
    assert {k for s in CLAIMS for k in s.keys} <= set(CFG)


def test_claims_5_and_6_draw_their_examples_from_every_class():
    # a test split stored class by class (CIFAR-10's folders): its first 100 examples are one class
    import torch

    from qd.report.claims.weights import drawn_examples

    y = torch.arange(10).repeat_interleave(100)
    x = torch.arange(1000).float().unsqueeze(1) * 2
    xs, ys = drawn_examples(x, y, 100, seed=0)
    assert len(ys) == 100 and len(set(xs[:, 0].tolist())) == 100  # without replacement
    assert torch.equal((xs[:, 0] / 2).long() // 100, ys)  # each input keeps its label
    assert len(set(ys.tolist())) == 10 and max(torch.bincount(ys, minlength=10).tolist()) < 25
    # fixed by the seed, and the smaller draw (claim 6's inputs) is the start of the larger (claim 5's)
    assert torch.equal(drawn_examples(x, y, 4, seed=0)[1], ys[:4])
    assert not torch.equal(drawn_examples(x, y, 100, seed=1)[1], ys)
