"""The claims page: ``claims.md`` (every claim of every task, its test, verdict, deciding interval and
evidence) and ``claims.csv`` (one row per claim and task; the README's claims section is generated from it).

Try: ``pytest tests/test_claims.py -k page``.
"""
from __future__ import annotations

import pandas as pd

from qd.report.claims.base import NOT_COMPARABLE, Claim

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
