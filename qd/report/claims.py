"""The paper's main claims (paper-notes section 4) checked against this preset's measurements.

Each check states the test it applies, returns PASS, FAIL or NOT TESTED, and carries the numbers
behind the verdict. Accuracies are means over seeds of the final quantized models.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

PASS, FAIL, NOT_TESTED = "PASS", "FAIL", "NOT TESTED"
PAPER_BITS = (2, 4)  # the official code's CIFAR-10 grid: claims about PM/QD/DQ orderings are made there


@dataclass
class Claim:
    number: str
    statement: str
    test: str
    verdict: str = NOT_TESTED
    evidence: list[str] = field(default_factory=list)


class Measurements:
    """Accuracy and size lookups on the aggregated table of one task."""

    def __init__(self, agg: pd.DataFrame, task: str, teacher: str, students: list[str]):
        self.a = agg[agg["task"] == task]
        self.teacher, self.students = teacher, students

    def row(self, model, method, bits=None, bucket=None):
        a = self.a[(self.a["model"] == model) & (self.a["method"] == method)]
        a = a[a["bits"].isna()] if bits is None else a[a["bits"] == bits]
        a = a[a["bucket"].isna()] if bucket is None else a[a["bucket"] == bucket]
        return None if a.empty else a.iloc[0]

    def acc(self, *key):
        r = self.row(*key)
        return None if r is None else float(r["accuracy_mean"])

    def bits_run(self, method) -> list[int]:
        return sorted({int(b) for b in self.a.loc[self.a["method"] == method, "bits"].dropna()})

    def main_bucket(self, method):
        b = self.a.loc[self.a["method"] == method, "bucket"].dropna()
        return int(b.mode().iloc[0]) if len(b) else None


def _pairwise(m: Measurements, better, worse, bits_list, margin=0.0, label_b="", label_w="") -> tuple[str, list]:
    """PASS when ``better`` >= ``worse`` - margin for every student and bit width measured."""
    lines, ok, seen = [], True, 0
    for s in m.students:
        for b in bits_list:
            hi, lo = better(s, b), worse(s, b)
            if hi is None or lo is None:
                continue
            seen += 1
            holds = hi >= lo - margin
            ok &= holds
            where = s if b is None else f"{s} {b}-bit"
            lines.append(f"{where}: {label_b} {hi:.2f} vs {label_w} {lo:.2f} "
                         f"({hi - lo:+.2f}) {'holds' if holds else 'does not hold'}")
    if not seen:
        return NOT_TESTED, ["the runs this check compares are not in this preset"]
    return (PASS if ok else FAIL), lines


def claim_match_teacher(m: Measurements, tol: float) -> Claim:
    c = Claim("1", "Quantized shallow students can match full-precision teachers with up to an order of "
                   "magnitude of compression.",
              f"some 4-bit student (QD or DQ) reaches teacher accuracy - {tol:g} points at >= 10x smaller than the "
              "fp32 teacher (paper's size formula)")
    t = m.row(m.teacher, "fp")
    if t is None:
        c.evidence = ["no teacher run"]
        return c
    cands = []
    for method in ("qd", "dq"):
        for s in m.students:
            r = m.row(s, method, 4, m.main_bucket(method))
            if r is not None:
                cands.append((float(r["accuracy_mean"]), float(t["size_fp32_mean"] / r["size_analytic_mean"]), s, method))
    if not cands:
        c.evidence = ["no 4-bit QD or DQ run"]
        return c
    teacher_acc = float(t["accuracy_mean"])
    good = [x for x in cands if x[0] >= teacher_acc - tol and x[1] >= 10]
    c.verdict = PASS if good else FAIL
    c.evidence = [f"teacher {teacher_acc:.2f}%"] + [
        f"{s} {method.upper()} 4-bit: {acc:.2f}% ({acc - teacher_acc:+.2f}), {ratio:.1f}x smaller"
        for acc, ratio, s, method in sorted(cands, reverse=True)]
    return c


def claim_distillation_helps(m: Measurements) -> list[Claim]:
    fp = Claim("3a", "Distillation helps full-precision students.",
               "FP distilled >= FP normal for every student")
    fp.verdict, fp.evidence = _pairwise(m, lambda s, b: m.acc(s, "distill"), lambda s, b: m.acc(s, "fp"), [None],
                                        label_b="distilled", label_w="normal")
    bits = [b for b in m.bits_run("qd") if b in PAPER_BITS]
    bucket = m.main_bucket("pm")
    qd = Claim("3b", "Quantized distillation beats post-training (PM) quantization.",
               f"QD >= PM (bucket {bucket}) for every student at {', '.join(map(str, bits)) or 'the paper'} bits")
    qd.verdict, qd.evidence = _pairwise(m, lambda s, b: m.acc(s, "qd", b, m.main_bucket("qd")),
                                        lambda s, b: m.acc(s, "pm", b, bucket), bits, label_b="QD", label_w="PM")
    pm_bits = [b for b in m.bits_run("pm") if b in PAPER_BITS]
    bk = Claim("3c", "Bucketing improves PM quantization.",
               f"PM with bucket {bucket} >= PM without bucketing for every student at {', '.join(map(str, pm_bits))} bits")
    bk.verdict, bk.evidence = _pairwise(m, lambda s, b: m.acc(s, "pm", b, bucket), lambda s, b: m.acc(s, "pm", b, None),
                                        pm_bits, label_b="bucketed", label_w="unbucketed")
    return [fp, qd, bk]


def claim_dq_competitive(m: Measurements, tol: float) -> list[Claim]:
    qd_b, dq_b = m.main_bucket("qd"), m.main_bucket("dq")
    four = Claim("4a", "Differentiable quantization is competitive with quantized distillation at 4 bits.",
                 f"DQ >= QD - {tol:g} points at 4 bits for every student")
    four.verdict, four.evidence = _pairwise(m, lambda s, b: m.acc(s, "dq", b, dq_b), lambda s, b: m.acc(s, "qd", b, qd_b),
                                            [4], margin=tol, label_b="DQ", label_w="QD")
    two = Claim("4b", "At 2 bits (CIFAR-10), quantized distillation is better than differentiable quantization.",
                "QD >= DQ at 2 bits for every student")
    two.verdict, two.evidence = _pairwise(m, lambda s, b: m.acc(s, "qd", b, qd_b), lambda s, b: m.acc(s, "dq", b, dq_b),
                                          [2], label_b="QD", label_w="DQ")
    return [four, two]


def claim_depth_speed(lat: pd.DataFrame) -> list[Claim]:
    """Claim 2 from the timed ResNets: speed-up of ResNet-18 over ResNet-34 against the depth ratio, and
    2xResNet-18 (twice as wide, 4x the multiply-adds) against ResNet-18."""
    t = lat[lat["group"] == "imagenet"].set_index("model")
    where = f"{t['device'].iloc[0]}, {int(t['threads'].iloc[0])} thread(s), batch {int(t['batch'].iloc[0])}"
    speedup = t.loc["ResNet-34", "median_ms"] / t.loc["ResNet-18", "median_ms"]
    depth_ratio = 34 / 18
    paper = 263 / 169
    a = Claim("2a", "Inference speed-up is almost linear in depth reduction (ResNet-34 -> ResNet-18).",
              f"ResNet-18's speed-up over ResNet-34 is at least 75% of the depth ratio 34/18 = {depth_ratio:.2f} "
              f"(the paper's 4-GPU timing: {paper:.2f}, {paper / depth_ratio:.0%})")
    a.verdict = PASS if speedup >= 0.75 * depth_ratio else FAIL
    a.evidence = [f"ResNet-34 {t.loc['ResNet-34', 'median_ms']:.1f} ms, ResNet-18 {t.loc['ResNet-18', 'median_ms']:.1f} ms: "
                  f"speed-up {speedup:.2f} ({speedup / depth_ratio:.0%} of the depth ratio) on {where}"]
    wide = t.loc["2xResNet-18", "median_ms"] / t.loc["ResNet-18", "median_ms"]
    b = Claim("2b", "A wider student of the same depth keeps the speed (2xResNet-18 as fast as ResNet-18).",
              "2xResNet-18 takes at most 1.25x ResNet-18's time (paper: 169 s vs 169 s on 4 GPUs)")
    b.verdict = PASS if wide <= 1.25 else FAIL
    b.evidence = [f"2xResNet-18 {t.loc['2xResNet-18', 'median_ms']:.1f} ms = {wide:.2f}x ResNet-18 on {where}; "
                  "it has 4x the multiply-adds, which a device with idle parallel units hides and a busy CPU does not"]
    return [a, b]


def untested(number: str, statement: str, why: str) -> Claim:
    return Claim(number, statement, why, NOT_TESTED, [])


def check_claims(agg: pd.DataFrame, task: str, teacher: str, students: list[str], cfg_report: dict,
                 extra: list[Claim] = ()) -> list[Claim]:
    m = Measurements(agg, task, teacher, students)
    claims = [claim_match_teacher(m, cfg_report["match_tolerance"])]
    claims += claim_distillation_helps(m)
    claims += claim_dq_competitive(m, cfg_report["competitive_tolerance"])
    claims += list(extra)
    if not any(c.number.startswith("2") for c in claims):
        claims.append(untested("2", "Inference speed-up is almost linear in depth reduction.",
                               "needs the depth latency measurement (evaluation.depth_latency.enabled)"))
    claims.append(untested("7", "Both methods work on convolutional and recurrent (seq2seq LSTM) models.",
                           "needs a translation task in the preset"))
    return sorted(claims, key=lambda c: c.number)


def claims_markdown(per_task: dict[str, list[Claim]], preset: str) -> str:
    lines = [f"# Claims of the paper checked on preset `{preset}`", "",
             "Each claim is the paper's (notes section 4); the test is what this suite measured to check it. "
             "Accuracies are test-set means over seeds of the final quantized weights.", ""]
    for task, claims in per_task.items():
        lines += [f"## Task `{task}`", "", "| # | claim | test | result |", "|---|---|---|---|"]
        lines += [f"| {c.number} | {c.statement} | {c.test} | **{c.verdict}** |" for c in claims]
        lines.append("")
        for c in claims:
            if c.evidence:
                lines += [f"### Claim {c.number}: {c.verdict}", ""] + [f"- {e}" for e in c.evidence] + [""]
    return "\n".join(lines)
