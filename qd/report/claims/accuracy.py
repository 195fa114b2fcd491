"""Claims 1, 3 and 4: what quantized students reach against teachers, full-precision students and
each other, from the paired cells of one task (``qd.report.claims.base``).

* 1: a 4-bit QD or DQ student matches the teacher at an order of magnitude of compression;
* 3a-3c: distillation helps full-precision students, QD beats post-training quantization (PM),
  bucketing helps PM;
* 4a-4b: DQ is competitive with QD at 4 bits, QD better than DQ at 2 bits.

Try: ``pytest tests/test_claims.py -k "ordering or noise"``.
"""
from __future__ import annotations

from qd.report.claims.base import (FAIL, PAPER_BITS, Claim, ClaimSpec, Evidence, counter_cases_text,
                                   paper_differences_text)
from qd.report.paper import PaperTargets

MATCH_TEACHER = ClaimSpec("1", "Quantized shallow students can match full-precision teachers with up to an order of "
                               "magnitude of compression.", ("match_tolerance", "match_min_compression"))
DISTILLATION_HELPS = ClaimSpec("3a", "Distillation helps full-precision students.", ("distill_min_gain",))
QD_BEATS_PM = ClaimSpec("3b", "Quantized distillation beats post-training (PM) quantization at the same bits.",
                        ("qd_vs_pm_min_gap_2bit", "qd_vs_pm_min_gap_4bit"))
BUCKETING_HELPS = ClaimSpec("3c", "Bucketing improves PM quantization.", ("bucket_min_gain_4bit",))
DQ_COMPETITIVE = ClaimSpec("4a", "Differentiable quantization is competitive with quantized distillation at 4 bits.",
                           ("dq_vs_qd_tolerance_4bit",))
QD_BETTER_2BIT = ClaimSpec("4b", "At 2 bits (CIFAR-10), quantized distillation is better than differentiable "
                                 "quantization.", ("qd_vs_dq_min_gap_2bit",), datasets=("cifar10",))


# ---------------------------------------------------------------------- claim 1
def claim_match_teacher(ev: Evidence) -> Claim:
    tol, ratio = ev.threshold("match_tolerance"), ev.cfg["match_min_compression"]
    c = MATCH_TEACHER.claim(
        f"some 4-bit QD or DQ student >= teacher - {tol:g} points (`report.match_tolerance`) and at least "
        f"{ratio:g}x smaller on disk than the teacher (`report.match_min_compression`)"
        + ev.threshold_note("match_tolerance"), rule="any")
    c.paper = _paper_claim1(ev.targets)
    c.caveat = _paper_under_ratio_text(ev.targets, ratio)
    teacher = ev.row(ev.teacher, "fp")
    if teacher is None:
        c.evidence.append("no teacher run")
        return c
    used = [ev.teacher]
    for method in ("qd", "dq"):
        bucket = ev.main_bucket(method)
        for s in ev.students:
            r = ev.row(s, method, 4, bucket)
            if r is None:
                continue
            disk = float(teacher["size_on_disk_mean"] / r["size_on_disk_mean"])
            formula = float(teacher["size_analytic_mean"] / r["size_analytic_mean"]) \
                if "size_analytic_mean" in r else float("nan")
            note = f"{disk:.1f}x smaller on disk ({formula:.1f}x by the paper's size formula)"
            cell = ev.cell(f"{s} {method.upper()} 4-bit", (s, method, 4, bucket), (ev.teacher, "fp", None, None),
                           -tol, method.upper(), "teacher", note)
            if cell is None:
                continue
            # the compression condition is part of the claim, so it enters the counter-case test too: a
            # cell the paper itself printed under `ratio` (ImageNet: 4.0x, 2.5x) is the paper's
            # counter-case, shown and left out of the verdict, not a FAIL of the reproduction
            paper_x = _paper_compression(ev.targets, ev.dataset, ev.teacher, s, method)
            if disk < ratio and cell.verdict != FAIL:
                cell.verdict, cell.note = FAIL, note + f": less than {ratio:g}x"
            if paper_x is not None and paper_x < ratio:
                cell.counter_case = True
                cell.note += f"; the paper's own cell is {paper_x:.1f}x smaller, under {ratio:g}x"
            c.cells.append(cell)
            used.append(s)
    return ev.finish(c, used, spec=MATCH_TEACHER)


def _paper_compression(t: PaperTargets, dataset: str, teacher: str, model: str, method: str) -> float | None:
    """The paper's teacher size over its 4-bit ``method`` student's (``size_mb`` cells), where it prints both."""
    st = t.value(dataset, teacher, "fp", metric="size_mb")
    size = t.value(dataset, model, method, 4, 256, metric="size_mb")
    return st / size if st and size else None


def _paper_under_ratio_text(t: PaperTargets, ratio: float) -> str:
    bad = []
    for ds in dict.fromkeys(t.t["dataset"]):
        for model in t.models(ds, "student"):
            teacher = t.teacher_of(ds, model)
            for method in ("qd", "dq"):
                x = _paper_compression(t, ds, teacher, model, method) if teacher else None
                if x is not None and x < ratio:
                    bad.append(f"{ds} {model} {method.upper()} 4-bit ({x:.1f}x smaller than {teacher})")
    return ("The paper's own table has cells under the claim's compression "
            f"(`report.match_min_compression` {ratio:g}x), shown and left out of the verdict: " + "; ".join(bad)
            + ".") if bad else ""


def _paper_claim1(t: PaperTargets) -> str:
    parts = []
    for ds in dict.fromkeys(t.t["dataset"]):
        for model in t.models(ds, "student"):
            teacher = t.teacher_of(ds, model)
            vt = t.value(ds, teacher, "fp") if teacher else None
            st = t.value(ds, teacher, "fp", metric="size_mb") if teacher else None
            for method in ("qd", "dq"):
                v = t.value(ds, model, method, 4, 256)
                if v is None or vt is None:
                    continue
                size = t.value(ds, model, method, 4, 256, metric="size_mb")
                x = f", {st / size:.1f}x smaller" if size and st else ""
                parts.append(f"{ds} {teacher} {vt:.2f} vs {model} {method.upper()} 4-bit {v:.2f} ({v - vt:+.2f}{x})")
    return "paper: " + "; ".join(parts) if parts else ""


# ---------------------------------------------------------------------- claim 3
def claim_distillation_helps(ev: Evidence) -> list[Claim]:
    gain = ev.threshold("distill_min_gain")
    fp = DISTILLATION_HELPS.claim(
        f"FP distilled - FP normal > {gain:+g} points for every student (`report.distill_min_gain`)"
        + ev.threshold_note("distill_min_gain"))
    fp.paper = paper_differences_text(ev.targets, ("distill", None, None), ("fp", None, None), "distilled - normal")
    fp.caveat = counter_cases_text(ev.targets, ("distill", None, None), ("fp", None, None),
                                   ev.cfg["distill_min_gain"], "(distillation did not help there)")
    for s in ev.students:
        cell = ev.cell(s, (s, "distill", None, None), (s, "fp", None, None), gain, "distilled", "normal")
        if cell:
            fp.cells.append(cell)
    claims = [ev.finish(fp, ev.students, spec=DISTILLATION_HELPS, context=(ev.teacher,))]

    pm_bucket, qd_bucket = ev.main_bucket("pm"), ev.main_bucket("qd")
    bits = [b for b in ev.bits_run("qd") if b in PAPER_BITS]
    gaps = {2: ev.threshold("qd_vs_pm_min_gap_2bit"), 4: ev.threshold("qd_vs_pm_min_gap_4bit")}
    paper_gaps = {2: ev.cfg["qd_vs_pm_min_gap_2bit"], 4: ev.cfg["qd_vs_pm_min_gap_4bit"]}
    qd = QD_BEATS_PM.claim(
        f"QD - PM (bucket {pm_bucket}) > {gaps[2]:g} points at 2 bits (`report.qd_vs_pm_min_gap_2bit`) and "
        f"> {gaps[4]:g} at 4 bits (`report.qd_vs_pm_min_gap_4bit`), every student"
        + ev.threshold_note("qd_vs_pm_min_gap_2bit", "qd_vs_pm_min_gap_4bit"))
    qd.paper = " · ".join(filter(None, [paper_differences_text(ev.targets, ("qd", b, 256), ("pm", b, 256),
                                                               f"QD - PM, {b} bits") for b in PAPER_BITS]))
    qd.caveat = " ".join(filter(None, [counter_cases_text(ev.targets, ("qd", b, 256), ("pm", b, 256), paper_gaps[b],
                                                          f"at {b} bits (QD not above PM)") for b in PAPER_BITS]))
    for s in ev.students:
        for b in bits:
            cell = ev.cell(f"{s} {b}-bit", (s, "qd", b, qd_bucket), (s, "pm", b, pm_bucket), gaps[b], "QD", "PM")
            if cell:
                qd.cells.append(cell)
    claims.append(ev.finish(qd, ev.students, spec=QD_BEATS_PM, context=(ev.teacher,)))

    gain4 = ev.threshold("bucket_min_gain_4bit")
    bk = BUCKETING_HELPS.claim(
        f"PM with bucket {pm_bucket} - PM without bucketing > {gain4:+g} points at 4 bits, every student "
        "(`report.bucket_min_gain_4bit`; at 2 bits both are near chance in the paper, at 8 within 0.1)"
        + ev.threshold_note("bucket_min_gain_4bit"))
    bk.paper = paper_differences_text(ev.targets, ("pm", 4, 256), ("pm", 4, None), "bucketed - unbucketed, 4 bits")
    bk.caveat = counter_cases_text(ev.targets, ("pm", 4, 256), ("pm", 4, None), ev.cfg["bucket_min_gain_4bit"],
                                   "at 4 bits")
    if 4 in ev.bits_run("pm"):
        for s in ev.students:
            cell = ev.cell(f"{s} 4-bit", (s, "pm", 4, pm_bucket), (s, "pm", 4, None), gain4, "bucketed", "unbucketed")
            if cell:
                bk.cells.append(cell)
    claims.append(ev.finish(bk, ev.students, spec=BUCKETING_HELPS, context=(ev.teacher,)))
    return claims


# ---------------------------------------------------------------------- claim 4
def claim_dq_competitive(ev: Evidence) -> list[Claim]:
    qd_b, dq_b = ev.main_bucket("qd"), ev.main_bucket("dq")
    tol = ev.threshold("dq_vs_qd_tolerance_4bit")
    four = DQ_COMPETITIVE.claim(
        f"DQ - QD > -{tol:g} points at 4 bits for every student (`report.dq_vs_qd_tolerance_4bit`)"
        + ev.threshold_note("dq_vs_qd_tolerance_4bit"))
    four.paper = paper_differences_text(ev.targets, ("dq", 4, 256), ("qd", 4, 256), "DQ - QD, 4 bits")
    four.caveat = counter_cases_text(ev.targets, ("dq", 4, 256), ("qd", 4, 256), -ev.cfg["dq_vs_qd_tolerance_4bit"],
                                     "at 4 bits")
    for s in ev.students:
        cell = ev.cell(f"{s} 4-bit", (s, "dq", 4, dq_b), (s, "qd", 4, qd_b), -tol, "DQ", "QD")
        if cell:
            four.cells.append(cell)
    gap = ev.threshold("qd_vs_dq_min_gap_2bit")
    two = QD_BETTER_2BIT.claim(
        f"QD - DQ > {gap:+g} points at 2 bits for every student (`report.qd_vs_dq_min_gap_2bit`)"
        + ev.threshold_note("qd_vs_dq_min_gap_2bit"))
    two.paper = paper_differences_text(ev.targets, ("qd", 2, 256), ("dq", 2, 256), "QD - DQ, 2 bits")
    two.caveat = counter_cases_text(ev.targets, ("qd", 2, 256), ("dq", 2, 256), ev.cfg["qd_vs_dq_min_gap_2bit"],
                                    "at 2 bits (DQ wins there)")
    for s in ev.students:
        cell = ev.cell(f"{s} 2-bit", (s, "qd", 2, qd_b), (s, "dq", 2, dq_b), gap, "QD", "DQ")
        if cell:
            two.cells.append(cell)
    return [ev.finish(four, ev.students, spec=DQ_COMPETITIVE, context=(ev.teacher,)),
            ev.finish(two, ev.students, spec=QD_BETTER_2BIT, context=(ev.teacher,))]
