"""What every claim is made of: its registered statement, the paired cells that test it, and the
evidence of one task the checks read.

Every comparison between two configurations is a *cell*: the difference ``A - B`` of the task's
primary metric (accuracy or BLEU, in points) with a paired interval over the test examples (and the
seeds, where there are several; ``qd.report.paired``), tested against a threshold read from the
config's ``report:`` block, whose defaults come from the paper's own numbers. Where the kind's metric
is lower-is-better (``TaskInfo.higher_is_better`` False) a cell tests the improvement ``B - A``. A cell is

* PASS when the whole interval clears the threshold, FAIL when the whole interval misses it,
  INCONCLUSIVE when the threshold lies inside it (the test set and the training noise cannot tell);
  the interval is one of methods, not of two trained models: it includes the run-to-run variance,
  from the seeds or, for a side with one seed, from a stated model (docs/verdicts.md), and each
  cell says which variances it includes;
* a *counter-case* when the paper's own table misses the threshold for the same model (e.g. the
  deeper student, where distillation did not help): it is shown and left out of the verdict.

A claim combines its cells (every cell must hold, or some cell must, as the claim says), with the
family-wise error over its cells controlled by Holm (``report.family_wise``), and is NOT COMPARABLE
when a model it rests on is far below the paper's (``report.not_comparable_below``): a verdict drawn
from students 15 points under the paper's says nothing about the paper's students. The models that gate
are the full-precision ones the claim's cells are made of: the students (normal and distilled) for the
claims that compare students, the teacher too where the claim compares against it (1). Elsewhere the
teacher's gap is listed but does not gate: what it hands on is measured by the distilled students,
which do (a 51% teacher yields distilled students far below the paper's). On a task the paper did not run
(a dataset with no paper numbers), or outside the dataset a claim names (4b: CIFAR-10), the verdict is
an *analogue* of the claim (``Claim.scope``), with its thresholds in the task's metric
(``report.thresholds_bleu`` for BLEU).

A claim's statement has one home, its :class:`ClaimSpec` in the module of its family; a
:class:`Claim` is only made from its spec (:meth:`ClaimSpec.claim`, :meth:`ClaimSpec.untested`).

Try: ``pytest tests/test_claims.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qd.report import rows_info
from qd.report.collect import main_bucket, runs_of
from qd.report.paired import paired_interval
from qd.report.paper import PaperTargets
from qd.report.stats import FAIL, INCONCLUSIVE, PASS, Interval, combine, family_verdicts, seed_bootstrap, verdict
from qd.tasks import TaskInfo

NOT_TESTED, NOT_COMPARABLE = "NOT TESTED", "NOT COMPARABLE"
PAPER_BITS = (2, 4)  # the bit widths of the paper's CIFAR tables: orderings of methods are claimed there
VERDICTS = (PASS, FAIL, INCONCLUSIVE, NOT_COMPARABLE, NOT_TESTED)
PAPER, ANALOGUE = "paper", "analogue"  # Claim.scope: the paper's setting, or an analogue on another task

Key = tuple  # (model, method, bits, bucket)


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of the paper as the suite registers it: its number, its statement (the only place the
    statement is written), and the ``report:`` settings its test reads."""

    number: str
    statement: str
    keys: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()  # the paper's datasets the claim is stated on (empty: any it ran)

    def claim(self, test: str, **kw) -> "Claim":
        return Claim(self.number, self.statement, test, **kw)

    def untested(self, why: str) -> "Claim":
        return Claim(self.number, self.statement, why, NOT_TESTED)


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
    lower_is_better: bool = False  # the interval is of B - A: the improvement of a lower-is-better metric
    alone: str = ""  # the cell's verdict on its own interval, where the family-wise control changed it

    def line(self) -> str:
        gain = self.b_value - self.a_value if self.lower_is_better else self.a_value - self.b_value
        iv = self.interval.describe() if self.interval else (
            f"{gain:+.2f} (no interval: one run each and no per-example outputs)")
        what = f"improvement {self.b} - {self.a} (lower is better)" if self.lower_is_better else "difference"
        paper = "" if self.paper is None else f"; paper {self.paper:+.2f}"
        counter = " — the paper's own table misses the threshold here: left out of the verdict" \
            if self.counter_case else ""
        note = f"; {self.note}" if self.note else ""
        holm = f" (alone {self.alone}; not confirmed by Holm over the claim's cells)" if self.alone else ""
        return (f"{self.where}: {self.a} {self.a_value:.2f} vs {self.b} {self.b_value:.2f}, {what} {iv}; "
                f"holds when > {self.threshold:+.2f}{paper}{note}: **{self.verdict}**{holm}{counter}")


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
    scope: str = PAPER  # PAPER, or ANALOGUE: a task the paper did not run (or a dataset the claim does not name)
    variances: str = ""  # what the deciding interval includes (test-set sampling, run-to-run: seeds or a model)
    family: str = ""  # how the family-wise error over the cells is controlled, in words

    def decide(self, alpha: float | None = None) -> None:
        """The verdict of the cells that test the claim (counter-cases left out); with ``alpha``, the
        family-wise error over them controlled by Holm (``stats.family_verdicts``)."""
        counted = [c for c in self.cells if not c.counter_case]
        if alpha is not None and len(counted) > 1:
            adjusted = family_verdicts([(c.interval, c.threshold, c.verdict) for c in counted], self.rule, alpha)
            for c, v in zip(counted, adjusted):
                if v != c.verdict:
                    c.alone, c.verdict = c.verdict, v
            side = "FAIL" if self.rule == "all" else "PASS"
            self.family = (f"family-wise error over {len(counted)} cells controlled by Holm at {alpha:g} on the "
                           f"{side} side (the other side needs every cell on its own)")
        elif len(counted) > 1:
            self.family = f"family-wise error over {len(counted)} cells NOT controlled (`report.family_wise: none`)"
        if counted:
            self.verdict = self.measured = combine([c.verdict for c in counted], self.rule)
            seeds = sorted({(c.interval.seeds_a, c.interval.seeds_b) for c in counted if c.interval})
            self.seeds = "seeds per side " + (", ".join(f"{a} vs {b}" for a, b in seeds) if seeds else "1 vs 1")
            ns = {c.interval.n_examples for c in counted if c.interval and c.interval.n_examples}
            self.n_test = max(ns) if ns else None
            d = self.deciding()
            self.variances = d.interval.variances if d else ""

    def deciding(self) -> Cell | None:
        """The cell that settles the verdict: the weakest under 'all', the strongest under 'any'."""
        counted = [c for c in self.cells if not c.counter_case and c.interval]
        if not counted:
            return None
        margin = [c.interval.low - c.threshold for c in counted]
        return counted[int(np.argmin(margin) if self.rule == "all" else np.argmax(margin))]

    def rests_on(self) -> str:
        n = f"{self.n_test:,} test examples" if self.n_test else ""
        inc = f"interval includes: {self.variances}" if self.variances else ""
        return "; ".join(x for x in (self.seeds, n, inc, self.family) if x)


class Evidence:
    """What the checks of one task read: run rows, their aggregate, run folders, the task's prepared
    data, the paper's numbers, the report settings (``cfg``), and what the report found across the
    preset: the depth-timing claims (``depth_claims``, claims 2a/2b), the task whose models are
    recurrent (``recurrent_task``: name and kind, claim 7), and the whole config (``config``)."""

    def __init__(self, df: pd.DataFrame, agg: pd.DataFrame, task: str, teacher: str, students: list[str],
                 results: Path, targets: PaperTargets, cfg: dict, data_folder: Path | None = None,
                 info: TaskInfo | None = None, depth_claims: list | None = None,
                 recurrent_task: tuple[str, str] | None = None, config: dict | None = None):
        self.df, self.agg = df[df["task"] == task], agg[agg["task"] == task]
        self.task, self.teacher, self.students = task, teacher, students
        self.results, self.targets, self.cfg = Path(results), targets, cfg
        self.data_folder = data_folder
        self.info = info or rows_info(self.df)
        self.kind = self.info.kind
        self.metric = self.info.primary
        self.higher_is_better = self.info.higher_is_better
        self.depth_claims = list(depth_claims or [])
        self.recurrent_task = recurrent_task
        self.config = config
        self.dataset = self.df["dataset"].iloc[0] if len(self.df) else ""
        self._cache: dict = {}

    # ---- thresholds in the task's metric
    def threshold(self, key: str) -> float:
        """A threshold of the ``report:`` block in points of the task's primary metric: accuracy points as
        the paper's tables give them, ``thresholds_bleu`` for BLEU (a key it lacks keeps its accuracy
        value, and the claim's test says so through :meth:`threshold_note`)."""
        per_metric = self.cfg.get(f"thresholds_{self.metric}") or {}
        return float(per_metric.get(key, self.cfg[key]))

    def threshold_note(self, *keys: str) -> str:
        if self.metric == "accuracy":
            return ""
        per_metric = self.cfg.get(f"thresholds_{self.metric}") or {}
        own = [k for k in keys if k in per_metric]
        kept = [k for k in keys if k not in per_metric]
        parts = [f"{self.metric.upper()} thresholds from `report.thresholds_{self.metric}`"] if own else []
        if kept:
            parts.append(f"{', '.join(kept)} in accuracy points: no {self.metric.upper()} value set")
        return " (" + "; ".join(parts) + ")" if parts else ""

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
        return main_bucket(self.agg, method)

    # ---- paired comparisons
    def compare(self, a: Key, b: Key) -> Interval | None:
        """Paired interval of ``A - B`` in points of the primary metric (``None``: no way to pair them):
        the task's paired test over its per-example outputs, else the spread over seeds."""
        if (a, b) in self._cache:
            return self._cache[(a, b)]
        ra, rb = runs_of(self.df, self.task, *a), runs_of(self.df, self.task, *b)
        n, seed, conf = self.cfg["bootstrap_samples"], self.cfg["bootstrap_seed"], self.cfg["confidence"]
        out = None
        if len(ra) and len(rb):
            out = paired_interval(self.info, self.results, list(ra["run"]), list(rb["run"]), self.data_folder,
                                  n, seed, conf, self.cfg)
            if out is None:
                out = seed_bootstrap(ra[self.metric], rb[self.metric], n, seed, conf)
        self._cache[(a, b)] = out
        return out

    def gain(self, a: Key, b: Key) -> Interval | None:
        """How much A improves on B: ``A - B``, or ``B - A`` for a lower-is-better metric."""
        return self.compare(a, b) if self.higher_is_better else self.compare(b, a)

    def cell(self, where: str, a: Key, b: Key, threshold: float, a_label: str, b_label: str,
             note: str = "") -> Cell | None:
        va, vb = self.mean(*a), self.mean(*b)
        if va is None or vb is None:
            return None
        iv = self.gain(a, b)
        pa = self.targets.value(self.dataset, a[0], *a[1:], metric=self.metric)
        pb = self.targets.value(self.dataset, b[0], *b[1:], metric=self.metric)
        paper = None if pa is None or pb is None else (pa - pb if self.higher_is_better else pb - pa)
        return Cell(where, a_label, b_label, va, vb, iv, threshold, verdict(iv, threshold), paper,
                    paper is not None and paper <= threshold, note, not self.higher_is_better)

    # ---- comparability with the paper
    def comparability(self, models: list[str], context: tuple[str, ...] = ()) -> tuple[bool | None, list[str]]:
        """Whether the full-precision models a claim rests on are within ``not_comparable_below`` points
        of the paper's (``None`` where the paper has no numbers for this dataset), and one line per model.

        ``context`` models are listed with their gap but do not gate: the teacher, for claims whose cells
        compare students only, where what the teacher hands on is measured by the distilled students' own
        cells, which gate."""
        below = self.cfg["not_comparable_below"]
        if not self.targets.has(self.dataset):
            return None, [f"the paper prints no numbers for dataset `{self.dataset}`: models not compared with it"]
        lines, ok = [], True
        for model in dict.fromkeys([*models, *context]):
            gating = model in models
            for method in (("fp",) if model == self.teacher else ("fp", "distill")):
                ours, paper = self.mean(model, method), self.targets.value(self.dataset, model, method,
                                                                           metric=self.metric)
                if ours is None:
                    continue
                if paper is None:
                    lines.append(f"{model} {method}: ours {ours:.2f}, the paper prints none")
                    continue
                far = ours < paper - below if self.higher_is_better else ours > paper + below
                ok &= not (far and gating)
                lines.append(f"{model} {method}: ours {ours:.2f} vs paper {paper:.2f} ({ours - paper:+.2f})"
                             + (f": more than {below:g} points below the paper's" if far else "")
                             + ("" if gating else " (not gating: the distilled students' cells measure what it "
                                                  "hands on)"))
        return ok, lines

    def scope_of(self, spec: ClaimSpec | None = None) -> tuple[str, str]:
        """PAPER where the paper ran this task's dataset (and, for a claim stated on named datasets, it is
        one of them); ANALOGUE otherwise, with the reason."""
        if not self.targets.has(self.dataset):
            return ANALOGUE, f"the paper did not run dataset `{self.dataset}`: an analogue of the claim"
        if spec is not None and spec.datasets and self.dataset not in spec.datasets:
            return ANALOGUE, (f"the paper states this claim on {', '.join(spec.datasets)} only: on `{self.dataset}` "
                              "an analogue")
        return PAPER, ""

    def finish(self, claim: Claim, models: list[str], comparable: bool = True, spec: ClaimSpec | None = None,
               context: tuple[str, ...] = ()) -> Claim:
        """Decide the verdict (Holm over the cells, ``report.family_wise``), list the models behind it, mark
        an analogue, and NOT COMPARABLE where the models are far below the paper's."""
        claim.decide((1 - self.cfg["confidence"]) if self.cfg.get("family_wise", "holm") == "holm" else None)
        claim.scope, why = self.scope_of(spec)
        if why:
            claim.evidence.append(why)
        if not claim.cells:
            claim.evidence.append("the runs this check compares are not in this preset")
            return claim
        ok, lines = self.comparability(models, context)
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
