"""The claims page: ``claims.md`` (every claim of every task, its test, verdict, deciding interval and
evidence) and ``claims.csv`` (one row per claim and task; the README's claims section is generated from it).

Try: ``pytest tests/test_claims.py -k page``.
"""
from __future__ import annotations

import pandas as pd

from qd.report.claims.base import ANALOGUE, NOT_COMPARABLE, Claim

PRESET_WIDE = "(preset)"  # the task column of the claims stated once per preset (2a, 2b)
LEGEND = ("PASS: the whole interval of the difference clears the claim's threshold. FAIL: the whole "
          "interval misses it. INCONCLUSIVE: the threshold lies inside the interval (the test set and the "
          "training noise cannot tell). NOT COMPARABLE: a full-precision model the verdict rests on (the students "
          "its cells compare, normal and distilled; the teacher where a cell compares against it) is more than "
          "`report.not_comparable_below` points below the paper's, or (2a, 2b) the timing ran on a device the "
          "paper's statement is not about (the measured verdict is given beside it). NOT TESTED: this preset "
          "lacks the runs or the data. *analogue*: the verdict is on a task the paper did not run (or outside the "
          "dataset the claim names), with thresholds in the task's metric: an analogue of the paper's claim, "
          "not a test of it.")
INTERVALS = ("Each interval is one of methods, not of two trained models, and says what it includes: the "
             "test-set sampling (examples or sentences resampled, paired) and the run-to-run variance of training, "
             "from the seeds where a side has several (hierarchical bootstrap: seeds, then examples nested) or "
             "from a stated model where it has one (accuracy: binomial, `report.run_variance_accuracy`; BLEU: "
             "calibrated on the task's seeds, `report.run_variance_bleu`; docs/verdicts.md). Claims over every "
             "student and bit width control the family-wise error with Holm (`report.family_wise`).")


def _result(c: Claim) -> str:
    r = f"**{c.verdict}**" + (f" (measured: {c.measured})" if c.verdict == NOT_COMPARABLE else "")
    return r + (" · *analogue*" if c.scope == ANALOGUE else "")


def _summary_interval(c: Claim) -> str:
    d = c.deciding()
    return f"{d.where}: {d.interval.describe()}" if d else c.summary


def _sections(claims: list[Claim]) -> list[str]:
    lines = []
    for c in claims:
        body = []
        if c.paper:
            body.append(f"- {c.paper}")
        if c.caveat:
            body.append(f"- {c.caveat}")
        body += [f"- {cell.line()}" for cell in c.cells]
        body += [f"- {e}" for e in c.evidence]
        if c.variances:
            body.append(f"- the interval includes: {c.variances}")
        if c.family:
            body.append(f"- {c.family}")
        if c.models:
            body.append("- models behind the verdict: " + "; ".join(c.models))
        if body:
            lines += [f"### Claim {c.number}: {c.verdict}", "", *body, ""]
    return lines


TABLE_HEAD = ["| # | claim | test and threshold | result | deciding interval | rests on |", "|---|---|---|---|---|---|"]


def _row(c: Claim) -> str:
    return (f"| {c.number} | {c.statement} | {c.test} | {_result(c)} | {_summary_interval(c)} | "
            f"{c.rests_on()} |")


def claims_markdown(per_task: dict[str, list[Claim]], preset: str, cfg: dict, tasks: dict[str, dict],
                    preset_claims: list[Claim] | None = None) -> str:
    lines = [f"# Claims of the paper checked on preset `{preset}`", "",
             "Each claim is the paper's (paper-notes section 4); the test is what this suite measured to check it, "
             "with its threshold (the config's `report:` block; defaults from the paper's own numbers). Differences "
             f"are in points of the task's primary metric, with {cfg['confidence']:.0%} intervals from "
             f"bootstraps over the test examples ({cfg['bootstrap_samples']} draws, seed {cfg['bootstrap_seed']}) "
             "and over seeds where there are several, or a stated model of run-to-run variance where a side has one.", "", LEGEND, "", INTERVALS, ""]
    if preset_claims:
        lines += ["## The whole preset (stated once, not per task)", "", *TABLE_HEAD,
                  *[_row(c) for c in preset_claims], "", *_sections(preset_claims)]
    for task, claims in per_task.items():
        info = tasks.get(task, {})
        lines += [f"## Task `{task}` ({info.get('kind', '')}, dataset `{info.get('dataset', '')}`, metric "
                  f"{info.get('metric', '')})", "", *TABLE_HEAD, *[_row(c) for c in claims], "", *_sections(claims)]
    return "\n".join(lines)


def claims_frame(per_task: dict[str, list[Claim]], preset_claims: list[Claim] | None = None) -> pd.DataFrame:
    """One row per claim and task (``claims.csv``: what the README's claims section is generated from);
    the claims stated once per preset first, under the task ``(preset)``."""
    rows = []
    groups = ({PRESET_WIDE: list(preset_claims)} if preset_claims else {}) | dict(per_task)
    for task, claims in groups.items():
        for c in claims:
            d = c.deciding()
            rows.append({"task": task, "claim": c.number, "verdict": c.verdict, "measured": c.measured or c.verdict,
                         "statement": c.statement, "test": c.test,
                         "where": d.where if d else "", "estimate": d.interval.estimate if d else None,
                         "low": d.interval.low if d else None, "high": d.interval.high if d else None,
                         "threshold": d.threshold if d else None,
                         "confidence": d.interval.confidence if d else None,
                         "summary": _summary_interval(c), "seeds": c.seeds, "n_test": c.n_test,
                         "scope": c.scope, "variances": c.variances, "family_wise": c.family,
                         "paper": c.paper, "caveat": c.caveat})
    return pd.DataFrame(rows)
