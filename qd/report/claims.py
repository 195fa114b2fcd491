"""The paper's main claims (paper-notes section 4) checked against one preset's measurements.

Every comparison between two configurations is a *cell*: the difference ``A - B`` of the task's
primary metric (accuracy or BLEU, in points) with a paired interval over the test examples (and the
seeds, where there are several; ``qd.report.stats``), tested against a threshold read from the
config's ``report:`` block, whose defaults come from the paper's own numbers. A cell is

* PASS when the whole interval clears the threshold, FAIL when the whole interval misses it,
  INCONCLUSIVE when the threshold lies inside it (the test set cannot tell);
* a *counter-case* when the paper's own table misses the threshold for the same model (e.g. the
  deeper student, where distillation did not help): it is shown and left out of the verdict.

A claim combines its cells (every cell must hold, or some cell must, as the claim says) and is
NOT COMPARABLE when a model it rests on is far below the paper's (``report.not_comparable_below``):
a verdict drawn from a 51% teacher says nothing about a paper whose teacher had 90%.

Claims 2 (speed), 5 (integer inference, ``qd.report.integer``) and 6 (Gaussian noise,
``qd.report.noise``) measure other things and build their own cells.

Try: ``pytest tests/test_claims.py``; on real runs ``qd report --config config/config.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qd.report.collect import correctness, hypotheses, references, runs_of
from qd.report.paper import PaperTargets
from qd.report.stats import (FAIL, INCONCLUSIVE, PASS, Interval, combine, paired_bleu_bootstrap, paired_difference,
                             seed_bootstrap, verdict)
from qd.tasks import TASKS

NOT_TESTED, NOT_COMPARABLE = "NOT TESTED", "NOT COMPARABLE"
PAPER_BITS = (2, 4)  # the bit widths of the paper's CIFAR tables: orderings of methods are claimed there
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_COMPARABLE, NOT_TESTED)

Key = tuple  # (model, method, bits, bucket)


@dataclass
class Cell:
    """One paired comparison ``A - B`` against a threshold."""

    where: str
    a: str
    b: str
    a_value: float
    b_value: float
    interval: Interval | None
    threshold: float
    verdict: str
    paper: float | None = None  # the paper's own A - B for this model, where it prints both
    counter_case: bool = False  # the paper's own numbers miss the threshold here
    note: str = ""

    def line(self) -> str:
        iv = self.interval.describe() if self.interval else (
            f"{self.a_value - self.b_value:+.2f} (no interval: one run each and no per-example outputs)")
        paper = "" if self.paper is None else f"; paper {self.paper:+.2f}"
        counter = " — the paper's own table misses the threshold here: left out of the verdict" \
            if self.counter_case else ""
        note = f"; {self.note}" if self.note else ""
        return (f"{self.where}: {self.a} {self.a_value:.2f} vs {self.b} {self.b_value:.2f}, difference {iv}; "
                f"holds when > {self.threshold:+.2f}{paper}{note}: **{self.verdict}**{counter}")


@dataclass
class Claim:
    number: str
    statement: str
    test: str
    verdict: str = NOT_TESTED
    measured: str = ""  # the verdict of the measurements before the comparability check
    rule: str = "all"
    cells: list[Cell] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    paper: str = ""  # the paper's own numbers behind the claim
    caveat: str = ""  # where the paper's own table contradicts the claim
    models: list[str] = field(default_factory=list)  # accuracy of the models it rests on vs the paper's
    seeds: str = ""  # what each side's numbers rest on: seeds per side, or timing repeats
    n_test: int | None = None
    summary: str = ""  # the deciding numbers of a claim without cells (2, 5, 6)

    def decide(self) -> None:
        """The verdict of the cells that test the claim (counter-cases left out)."""
        counted = [c for c in self.cells if not c.counter_case]
        if counted:
            self.verdict = self.measured = combine([c.verdict for c in counted], self.rule)
            seeds = sorted({(c.interval.seeds_a, c.interval.seeds_b) for c in counted if c.interval})
            self.seeds = "seeds per side " + (", ".join(f"{a} vs {b}" for a, b in seeds) if seeds else "1 vs 1")
            ns = {c.interval.n_examples for c in counted if c.interval and c.interval.n_examples}
            self.n_test = max(ns) if ns else None

    def deciding(self) -> Cell | None:
        """The cell that settles the verdict: the weakest under 'all', the strongest under 'any'."""
        counted = [c for c in self.cells if not c.counter_case and c.interval]
        if not counted:
            return None
        margin = [c.interval.low - c.threshold for c in counted]
        return counted[int(np.argmin(margin) if self.rule == "all" else np.argmax(margin))]

    def rests_on(self) -> str:
        n = f"{self.n_test:,} test examples" if self.n_test else ""
        return "; ".join(x for x in (self.seeds, n) if x)


class Evidence:
    """What the checks of one task read: run rows, their aggregate, run folders, the paper's numbers."""

    def __init__(self, df: pd.DataFrame, agg: pd.DataFrame, task: str, teacher: str, students: list[str],
                 results: Path, targets: PaperTargets, cfg: dict, data_folder: Path | None = None):
        self.df, self.agg = df[df["task"] == task], agg[agg["task"] == task]
        self.task, self.teacher, self.students = task, teacher, students
        self.results, self.targets, self.cfg = Path(results), targets, cfg
        self.data_folder = data_folder
        kinds = self.df["kind"] if "kind" in self.df else pd.Series(["classification"])
        self.kind = kinds.iloc[0] if len(kinds) else "classification"
        self.info = TASKS[self.kind]
        self.metric = self.info.primary
        self.dataset = self.df["dataset"].iloc[0] if len(self.df) else ""
        self._cache: dict = {}

    # ---- measured values
    def row(self, model, method, bits=None, bucket=None) -> pd.Series | None:
        a = self.agg[(self.agg["model"] == model) & (self.agg["method"] == method)]
        a = a[a["bits"].isna()] if bits is None else a[a["bits"] == bits]
        a = a[a["bucket"].isna()] if bucket is None else a[a["bucket"] == bucket]
        return None if a.empty else a.iloc[0]

    def mean(self, model, method, bits=None, bucket=None, metric: str | None = None) -> float | None:
        r = self.row(model, method, bits, bucket)
        col = f"{metric or self.metric}_mean"
        return None if r is None or col not in r or pd.isna(r[col]) else float(r[col])

    def bits_run(self, method) -> list[int]:
        return sorted({int(b) for b in self.agg.loc[self.agg["method"] == method, "bits"].dropna()})

    def main_bucket(self, method) -> int | None:
        b = self.agg.loc[self.agg["method"] == method, "bucket"].dropna()
        return int(b.mode().iloc[0]) if len(b) else None

    # ---- paired comparisons
    def compare(self, a: Key, b: Key) -> Interval | None:
        """Paired interval of ``A - B`` in points of the primary metric (``None``: no way to pair them)."""
        if (a, b) in self._cache:
            return self._cache[(a, b)]
        ra, rb = runs_of(self.df, self.task, *a), runs_of(self.df, self.task, *b)
        n, seed, conf = self.cfg["bootstrap_samples"], self.cfg["bootstrap_seed"], self.cfg["confidence"]
        out = None
        if len(ra) and len(rb):
            if self.kind == "translation":
                ha, hb = hypotheses(self.results, list(ra["run"])), hypotheses(self.results, list(rb["run"]))
                refs = references(self.data_folder) if self.data_folder else None
                if ha and hb and refs:
                    out = paired_bleu_bootstrap(ha, hb, refs, min(n, 1000), seed, conf)
            else:
                ca, cb = correctness(self.results, list(ra["run"])), correctness(self.results, list(rb["run"]))
                if ca is not None and cb is not None:
                    if ca.shape[1] != cb.shape[1]:
                        raise ValueError(f"{a} and {b} were evaluated on test sets of different sizes "
                                         f"({ca.shape[1]} and {cb.shape[1]})")
                    out = paired_difference(ca, cb, n, seed, conf)
            if out is None:
                out = seed_bootstrap(ra[self.metric], rb[self.metric], n, seed, conf)
        self._cache[(a, b)] = out
        return out

    def cell(self, where: str, a: Key, b: Key, threshold: float, a_label: str, b_label: str,
             note: str = "") -> Cell | None:
        va, vb = self.mean(*a), self.mean(*b)
        if va is None or vb is None:
            return None
        iv = self.compare(a, b)
        pa = self.targets.value(self.dataset, a[0], *a[1:], metric=self.metric)
        pb = self.targets.value(self.dataset, b[0], *b[1:], metric=self.metric)
        paper = None if pa is None or pb is None else pa - pb
        return Cell(where, a_label, b_label, va, vb, iv, threshold, verdict(iv, threshold), paper,
                    paper is not None and paper <= threshold, note)

    # ---- comparability with the paper
    def comparability(self, models: list[str]) -> tuple[bool | None, list[str]]:
        """Whether the full-precision models a claim rests on are within ``not_comparable_below`` points
        of the paper's (``None`` where the paper has no numbers for this dataset), and one line per model."""
        below = self.cfg["not_comparable_below"]
        if not self.targets.has(self.dataset):
            return None, [f"the paper prints no numbers for dataset `{self.dataset}`: models not compared with it"]
        lines, ok = [], True
        for model in dict.fromkeys(models):
            for method in (("fp",) if model == self.teacher else ("fp", "distill")):
                ours, paper = self.mean(model, method), self.targets.value(self.dataset, model, method,
                                                                           metric=self.metric)
                if ours is None:
                    continue
                if paper is None:
                    lines.append(f"{model} {method}: ours {ours:.2f}, the paper prints none")
                    continue
                far = ours < paper - below
                ok &= not far
                lines.append(f"{model} {method}: ours {ours:.2f} vs paper {paper:.2f} ({ours - paper:+.2f})"
                             + (f": more than {below:g} points below the paper's" if far else ""))
        return ok, lines

    def finish(self, claim: Claim, models: list[str], comparable: bool = True) -> Claim:
        """Decide the verdict, list the models behind it, and mark it NOT COMPARABLE where they are far
        below the paper's."""
        claim.decide()
        if not claim.cells:
            claim.evidence.append("the runs this check compares are not in this preset")
            return claim
        ok, lines = self.comparability(models)
        claim.models = lines
        if comparable and ok is False and claim.verdict != NOT_TESTED:
            claim.verdict = NOT_COMPARABLE
        return claim


# ---------------------------------------------------------------------- the paper's numbers in words
def paper_differences_text(targets: PaperTargets, a: tuple, b: tuple, label: str, metric: str = "accuracy") -> str:
    diffs = targets.differences(a, b, metric)
    if not diffs:
        return ""
    by_ds: dict[str, list[str]] = {}
    for ds, model, d in diffs:
        by_ds.setdefault(ds, []).append(f"{model} {d:+.2f}")
    return f"paper ({label}): " + "; ".join(f"{ds} " + ", ".join(v) for ds, v in by_ds.items())


def counter_cases_text(targets: PaperTargets, a: tuple, b: tuple, threshold: float, what: str,
                       metric: str = "accuracy") -> str:
    bad = [(ds, m, d) for ds, m, d in targets.differences(a, b, metric) if d <= threshold]
    if not bad:
        return ""
    return ("The paper's own table contradicts this " + what + ": "
            + "; ".join(f"{ds} {m} ({d:+.2f})" for ds, m, d in bad) + ".")


def _bits_name(bits) -> str:
    return "" if bits is None else f" {bits}-bit"


# ---------------------------------------------------------------------- claim 1
def claim_match_teacher(ev: Evidence) -> Claim:
    tol, ratio = ev.cfg["match_tolerance"], ev.cfg["match_min_compression"]
    c = Claim("1", "Quantized shallow students can match full-precision teachers with up to an order of "
                   "magnitude of compression.",
              f"some 4-bit QD or DQ student >= teacher - {tol:g} points (`report.match_tolerance`) and at least "
              f"{ratio:g}x smaller on disk than the teacher (`report.match_min_compression`)", rule="any")
    c.paper = _paper_claim1(ev.targets)
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
            if disk < ratio and cell.verdict != FAIL:
                cell.verdict, cell.note = FAIL, note + f": less than {ratio:g}x"
            c.cells.append(cell)
            used.append(s)
    return ev.finish(c, used)


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
    gain = ev.cfg["distill_min_gain"]
    fp = Claim("3a", "Distillation helps full-precision students.",
               f"FP distilled - FP normal > {gain:+g} points for every student (`report.distill_min_gain`)")
    fp.paper = paper_differences_text(ev.targets, ("distill", None, None), ("fp", None, None), "distilled - normal")
    fp.caveat = counter_cases_text(ev.targets, ("distill", None, None), ("fp", None, None), gain,
                                   "(distillation did not help there)")
    for s in ev.students:
        cell = ev.cell(s, (s, "distill", None, None), (s, "fp", None, None), gain, "distilled", "normal")
        if cell:
            fp.cells.append(cell)
    claims = [ev.finish(fp, [ev.teacher, *ev.students])]

    pm_bucket, qd_bucket = ev.main_bucket("pm"), ev.main_bucket("qd")
    bits = [b for b in ev.bits_run("qd") if b in PAPER_BITS]
    gaps = {2: ev.cfg["qd_vs_pm_min_gap_2bit"], 4: ev.cfg["qd_vs_pm_min_gap_4bit"]}
    qd = Claim("3b", "Quantized distillation beats post-training (PM) quantization at the same bits.",
               f"QD - PM (bucket {pm_bucket}) > {gaps[2]:g} points at 2 bits (`report.qd_vs_pm_min_gap_2bit`) and "
               f"> {gaps[4]:g} at 4 bits (`report.qd_vs_pm_min_gap_4bit`), every student")
    qd.paper = " · ".join(filter(None, [paper_differences_text(ev.targets, ("qd", b, 256), ("pm", b, 256),
                                                               f"QD - PM, {b} bits") for b in PAPER_BITS]))
    qd.caveat = " ".join(filter(None, [counter_cases_text(ev.targets, ("qd", b, 256), ("pm", b, 256), gaps[b],
                                                          f"at {b} bits (QD not above PM)") for b in PAPER_BITS]))
    for s in ev.students:
        for b in bits:
            cell = ev.cell(f"{s} {b}-bit", (s, "qd", b, qd_bucket), (s, "pm", b, pm_bucket), gaps[b], "QD", "PM")
            if cell:
                qd.cells.append(cell)
    claims.append(ev.finish(qd, [ev.teacher, *ev.students]))

    gain4 = ev.cfg["bucket_min_gain_4bit"]
    bk = Claim("3c", "Bucketing improves PM quantization.",
               f"PM with bucket {pm_bucket} - PM without bucketing > {gain4:+g} points at 4 bits, every student "
               "(`report.bucket_min_gain_4bit`; at 2 bits both are near chance in the paper, at 8 within 0.1)")
    bk.paper = paper_differences_text(ev.targets, ("pm", 4, 256), ("pm", 4, None), "bucketed - unbucketed, 4 bits")
    bk.caveat = counter_cases_text(ev.targets, ("pm", 4, 256), ("pm", 4, None), gain4, "at 4 bits")
    if 4 in ev.bits_run("pm"):
        for s in ev.students:
            cell = ev.cell(f"{s} 4-bit", (s, "pm", 4, pm_bucket), (s, "pm", 4, None), gain4, "bucketed", "unbucketed")
            if cell:
                bk.cells.append(cell)
    claims.append(ev.finish(bk, [ev.teacher, *ev.students]))
    return claims


# ---------------------------------------------------------------------- claim 4
def claim_dq_competitive(ev: Evidence) -> list[Claim]:
    qd_b, dq_b = ev.main_bucket("qd"), ev.main_bucket("dq")
    tol = ev.cfg["dq_vs_qd_tolerance_4bit"]
    four = Claim("4a", "Differentiable quantization is competitive with quantized distillation at 4 bits.",
                 f"DQ - QD > -{tol:g} points at 4 bits for every student (`report.dq_vs_qd_tolerance_4bit`)")
    four.paper = paper_differences_text(ev.targets, ("dq", 4, 256), ("qd", 4, 256), "DQ - QD, 4 bits")
    four.caveat = counter_cases_text(ev.targets, ("dq", 4, 256), ("qd", 4, 256), -tol, "at 4 bits")
    for s in ev.students:
        cell = ev.cell(f"{s} 4-bit", (s, "dq", 4, dq_b), (s, "qd", 4, qd_b), -tol, "DQ", "QD")
        if cell:
            four.cells.append(cell)
    gap = ev.cfg["qd_vs_dq_min_gap_2bit"]
    two = Claim("4b", "At 2 bits (CIFAR-10), quantized distillation is better than differentiable quantization.",
                f"QD - DQ > {gap:+g} points at 2 bits for every student (`report.qd_vs_dq_min_gap_2bit`)")
    two.paper = paper_differences_text(ev.targets, ("qd", 2, 256), ("dq", 2, 256), "QD - DQ, 2 bits")
    two.caveat = counter_cases_text(ev.targets, ("qd", 2, 256), ("dq", 2, 256), gap, "at 2 bits (DQ wins there)")
    for s in ev.students:
        cell = ev.cell(f"{s} 2-bit", (s, "qd", 2, qd_b), (s, "dq", 2, dq_b), gap, "QD", "DQ")
        if cell:
            two.cells.append(cell)
    return [ev.finish(four, [ev.teacher, *ev.students]), ev.finish(two, [ev.teacher, *ev.students])]


# ---------------------------------------------------------------------- claim 7
RECURRENT_STATEMENT = "Both methods work on convolutional and recurrent (seq2seq LSTM) models."


def claim_recurrent(ev: Evidence) -> Claim:
    """On a translation task: 4-bit QD and DQ students each within ``recurrent_tolerance`` BLEU of the
    same student trained in full precision with distillation."""
    tol = ev.cfg["recurrent_tolerance"]
    c = Claim("7", RECURRENT_STATEMENT,
              f"on the recurrent task `{ev.task}`: 4-bit QD and 4-bit DQ each >= FP distilled - {tol:g} "
              f"{ev.metric.upper()} points for every student (`report.recurrent_tolerance`; the paper's "
              "translation numbers are not retrieved)")
    for method in ("qd", "dq"):
        bucket = ev.main_bucket(method)
        for s in ev.students:
            ppl = ev.mean(s, method, 4, bucket, "ppl")
            note = f"perplexity {ppl:.2f}" if ppl is not None else ""
            cell = ev.cell(f"{s} {method.upper()} 4-bit", (s, method, 4, bucket), (s, "distill", None, None), -tol,
                           method.upper(), "FP distilled", note)
            if cell:
                c.cells.append(cell)
    missing = [m for m in ("qd", "dq") if not any(cell.a == m.upper() for cell in c.cells)]
    c = ev.finish(c, [ev.teacher, *ev.students])
    if missing and c.cells:
        c.verdict = c.measured = INCONCLUSIVE if c.verdict != FAIL else FAIL
        c.evidence.append(f"no 4-bit {', '.join(m.upper() for m in missing)} run: 'both methods' is not tested")
    return c


def untested(number: str, statement: str, why: str) -> Claim:
    return Claim(number, statement, why, NOT_TESTED)


# ---------------------------------------------------------------------- claim 2
def _name(model: str) -> str:
    """The suite's model name of a timing row ('ResNet-34' -> 'resnet34')."""
    return model.lower().replace("-", "").replace("_", "")


def _ratio_interval(num_ms: float, num_iqr: float, den_ms: float, den_iqr: float) -> tuple[float, float]:
    """Range of ``num / den`` when each time moves over its interquartile range (median -+ IQR/2)."""
    lo = max(num_ms - num_iqr / 2, 1e-12) / (den_ms + den_iqr / 2)
    hi = (num_ms + num_iqr / 2) / max(den_ms - den_iqr / 2, 1e-12)
    return lo, hi


def _range_verdict(lo: float, hi: float, threshold: float, above: bool = True) -> str:
    if above:
        return PASS if lo >= threshold else (FAIL if hi < threshold else INCONCLUSIVE)
    return PASS if hi <= threshold else (FAIL if lo > threshold else INCONCLUSIVE)


def claim_depth_speed(lat: pd.DataFrame, targets: PaperTargets, cfg: dict) -> list[Claim]:
    """Claim 2 on the timed ResNets (``latency_depth.csv``): ResNet-18's speed-up over ResNet-34 against
    the depth ratio, and 2xResNet-18 (same depth, twice as wide) against ResNet-18; the paper's
    ImageNet timings are read from the targets file."""
    frac, wide_max = cfg["speedup_fraction_of_depth"], cfg["wide_max_time_ratio"]
    t = lat[lat["group"] == "imagenet"].copy()
    t["name"] = t["model"].map(_name)
    t = t.set_index("name")
    need = {"resnet34", "resnet18", "2xresnet18"}
    if not need <= set(t.index):
        return [untested("2a", "Inference speed-up is almost linear in depth reduction (ResNet-34 -> ResNet-18).",
                         f"latency_depth.csv lacks {sorted(need - set(t.index))}")]
    where = f"{t['device'].iloc[0]}, {int(t['threads'].iloc[0])} thread(s), batch {int(t['batch'].iloc[0])}"
    deep, shallow, wide = t.loc["resnet34"], t.loc["resnet18"], t.loc["2xresnet18"]
    depth_ratio = float(deep["depth"] / shallow["depth"])
    p34, p18, p2x = (targets.speed(m) for m in ("resnet34", "resnet18", "2xresnet18"))
    paper = (f"paper, ImageNet test set on 4 GPUs: {p34:g} s vs {p18:g} s = {p34 / p18:.2f}x "
             f"({p34 / p18 / depth_ratio:.0%} of the depth ratio)") if p34 and p18 else "paper: not in the targets file"
    speedup = float(deep["median_ms"] / shallow["median_ms"])
    lo, hi = _ratio_interval(deep["median_ms"], deep["iqr_ms"], shallow["median_ms"], shallow["iqr_ms"])
    a = Claim("2a", "Inference speed-up is almost linear in depth reduction (ResNet-34 -> ResNet-18).",
              f"ResNet-18's speed-up over ResNet-34 >= {frac:g} x the depth ratio {depth_ratio:.2f} "
              f"(`report.speedup_fraction_of_depth`)")
    a.paper = paper
    a.verdict = a.measured = _range_verdict(lo, hi, frac * depth_ratio)
    a.evidence = [f"ResNet-34 {deep['median_ms']:.1f} ms (IQR {deep['iqr_ms']:.1f}), ResNet-18 "
                  f"{shallow['median_ms']:.1f} ms (IQR {shallow['iqr_ms']:.1f}): speed-up {speedup:.2f} "
                  f"[{lo:.2f}, {hi:.2f} over the IQRs] = {speedup / depth_ratio:.0%} of the depth ratio; holds when "
                  f">= {frac * depth_ratio:.2f}; on {where}"]
    a.seeds = "median and IQR of the timing repeats"
    a.summary = f"speed-up {speedup:.2f} [{lo:.2f}, {hi:.2f}] vs >= {frac * depth_ratio:.2f}"
    ratio = float(wide["median_ms"] / shallow["median_ms"])
    lo, hi = _ratio_interval(wide["median_ms"], wide["iqr_ms"], shallow["median_ms"], shallow["iqr_ms"])
    b = Claim("2b", "A wider student of the same depth keeps the speed (2xResNet-18 as fast as ResNet-18).",
              f"2xResNet-18 takes <= {wide_max:g} x ResNet-18's time (`report.wide_max_time_ratio`)")
    b.paper = f"paper: {p2x:g} s vs {p18:g} s = {p2x / p18:.2f}x" if p2x and p18 else ""
    b.verdict = b.measured = _range_verdict(lo, hi, wide_max, above=False)
    b.evidence = [f"2xResNet-18 {wide['median_ms']:.1f} ms = {ratio:.2f}x ResNet-18 [{lo:.2f}, {hi:.2f}] on {where}; "
                  "it has 4x the multiply-adds, which a device with idle parallel units hides and a busy CPU does not"]
    b.seeds = "median and IQR of the timing repeats"
    b.summary = f"time ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}] vs <= {wide_max:g}"
    return [a, b]


def claim_trained_speed(ev: Evidence, depth: dict[str, int]) -> Claim:
    """Claim 2 on the task's own trained models (the timing job's ``latency.csv``): each FP student's
    speed-up over the teacher against their depth ratio (layers with weights)."""
    frac = ev.cfg["speedup_fraction_of_depth"]
    c = Claim("2c", "Inference speed-up is almost linear in depth reduction (the task's teacher -> students).",
              f"each student's speed-up over the teacher >= {frac:g} x their depth ratio "
              "(`report.speedup_fraction_of_depth`), timed by the preset's timing job")
    t = ev.row(ev.teacher, "fp")
    if t is None or "latency_median_ms_mean" not in t or pd.isna(t["latency_median_ms_mean"]) \
            or ev.teacher not in depth:
        c.evidence.append("no teacher latency (the timing job writes latency.csv) or no teacher depth")
        return c
    verdicts = []
    for s in ev.students:
        r = ev.row(s, "fp")
        if r is None or pd.isna(r.get("latency_median_ms_mean")) or s not in depth:
            continue
        dr = depth[ev.teacher] / depth[s]
        t_iqr = t.get("latency_iqr_ms_mean", 0.0)
        s_iqr = r.get("latency_iqr_ms_mean", 0.0)
        t_iqr = 0.0 if pd.isna(t_iqr) else t_iqr
        s_iqr = 0.0 if pd.isna(s_iqr) else s_iqr
        sp = t["latency_median_ms_mean"] / r["latency_median_ms_mean"]
        lo, hi = _ratio_interval(t["latency_median_ms_mean"], t_iqr, r["latency_median_ms_mean"], s_iqr)
        v = _range_verdict(lo, hi, frac * dr)
        verdicts.append(v)
        width = float(t["params_mean"] / r["params_mean"]) if "params_mean" in r else float("nan")
        c.evidence.append(f"{s}: {depth[s]} layers vs the teacher's {depth[ev.teacher]} (ratio {dr:.2f}); speed-up "
                          f"{sp:.2f} [{lo:.2f}, {hi:.2f} over the IQRs]; holds when >= {frac * dr:.2f}: **{v}** "
                          f"(the teacher also has {width:.1f}x the parameters: width, not only depth, differs)")
    if verdicts:
        c.verdict = c.measured = combine(verdicts, "all")
        c.seeds = "median and IQR of the timing job's repeats"
        c.summary = f"{sum(v == PASS for v in verdicts)} of {len(verdicts)} students hold"
    return c


# ---------------------------------------------------------------------- all claims of a task
def check_claims(ev: Evidence, extra: list[Claim] = (), recurrent_task: str | None = None) -> list[Claim]:
    """Claims 1, 3, 4 (and 7 on a translation task) from the measurements, plus ``extra`` (2, 5, 6)."""
    claims = [claim_match_teacher(ev), *claim_distillation_helps(ev), *claim_dq_competitive(ev), *extra]
    if not any(c.number.startswith("2") for c in claims):
        claims.append(untested("2", "Inference speed-up is almost linear in depth reduction.",
                               "needs the depth timing (evaluation.depth_latency.enabled) or the timing job"))
    for number, statement in (("5", "Uniformly quantized students run on low-precision integer inference stacks."),
                              ("6", "Weight quantization acts like additive Gaussian noise on layer outputs.")):
        if not any(c.number == number for c in claims):
            claims.append(untested(number, statement, f"not tested on {ev.kind} tasks"))
    if ev.kind == "translation":
        claims.append(claim_recurrent(ev))
    else:
        why = (f"tested on the translation task `{recurrent_task}`" if recurrent_task
               else "needs a translation task in the preset")
        claims.append(untested("7", RECURRENT_STATEMENT, why))
    return sorted(claims, key=lambda c: c.number)


# ---------------------------------------------------------------------- output
LEGEND = ("PASS: the whole interval of the difference clears the claim's threshold. FAIL: the whole "
          "interval misses it. INCONCLUSIVE: the threshold lies inside the interval (the test set cannot "
          "tell). NOT COMPARABLE: a full-precision model the verdict rests on is more than "
          "`report.not_comparable_below` points below the paper's (the measured verdict is given beside it). "
          "NOT TESTED: this preset lacks the runs or the data.")


def _summary_interval(c: Claim) -> str:
    d = c.deciding()
    return f"{d.where}: {d.interval.describe()}" if d else c.summary


def claims_markdown(per_task: dict[str, list[Claim]], preset: str, cfg: dict, tasks: dict[str, dict]) -> str:
    lines = [f"# Claims of the paper checked on preset `{preset}`", "",
             "Each claim is the paper's (paper-notes section 4); the test is what this suite measured to check it, "
             "with its threshold (the config's `report:` block; defaults from the paper's own numbers). Differences "
             f"are in points of the task's primary metric, with {cfg['confidence']:.0%} intervals from paired "
             f"bootstraps over the test examples ({cfg['bootstrap_samples']} draws, seed {cfg['bootstrap_seed']}) "
             "and over seeds where there are several.", "", LEGEND, ""]
    for task, claims in per_task.items():
        info = tasks.get(task, {})
        lines += [f"## Task `{task}` ({info.get('kind', '')}, dataset `{info.get('dataset', '')}`, metric "
                  f"{info.get('metric', '')})", "",
                  "| # | claim | test and threshold | result | deciding interval | rests on |",
                  "|---|---|---|---|---|---|"]
        for c in claims:
            result = f"**{c.verdict}**" + (f" (measured: {c.measured})" if c.verdict == NOT_COMPARABLE else "")
            lines.append(f"| {c.number} | {c.statement} | {c.test} | {result} | {_summary_interval(c)} | "
                         f"{c.rests_on()} |")
        lines.append("")
        for c in claims:
            body = []
            if c.paper:
                body.append(f"- {c.paper}")
            if c.caveat:
                body.append(f"- {c.caveat}")
            body += [f"- {cell.line()}" for cell in c.cells]
            body += [f"- {e}" for e in c.evidence]
            if c.models:
                body.append("- models behind the verdict: " + "; ".join(c.models))
            if body:
                lines += [f"### Claim {c.number}: {c.verdict}", "", *body, ""]
    return "\n".join(lines)


def claims_frame(per_task: dict[str, list[Claim]]) -> pd.DataFrame:
    """One row per claim and task (``claims.csv``: what the README's claims section is generated from)."""
    rows = []
    for task, claims in per_task.items():
        for c in claims:
            d = c.deciding()
            rows.append({"task": task, "claim": c.number, "verdict": c.verdict, "measured": c.measured or c.verdict,
                         "statement": c.statement, "test": c.test,
                         "where": d.where if d else "", "estimate": d.interval.estimate if d else None,
                         "low": d.interval.low if d else None, "high": d.interval.high if d else None,
                         "threshold": d.threshold if d else None,
                         "confidence": d.interval.confidence if d else None,
                         "summary": _summary_interval(c), "seeds": c.seeds, "n_test": c.n_test,
                         "paper": c.paper, "caveat": c.caveat})
    return pd.DataFrame(rows)
