"""A finished run beside its reference record: ``qd diff --preset P [--results DIR] [--against DIR]``.

One Markdown table says whether this machine reproduced the reference (``reference/<preset>/results/``,
:mod:`qd.report.reference`): first every claim, with the two verdicts and whether they agree (a PASS
on one side against a FAIL on the other is flagged **PASS vs FAIL**; a verdict that moved to or from
INCONCLUSIVE "differs"), then every cell of the summary (task, model, method, bits, bucket) with the
primary metric of each side (mean over seeds) and the difference this run - reference. A line above
the table counts the agreements, the flips and the largest differences.

Training noise moves single models between machines (the CPU's float arithmetic is enough), so cells
are expected to differ by a point or so; the verdicts' intervals include that run-to-run variance
(docs/verdicts.md), so a PASS against FAIL is the disagreement that says the reference did not reproduce.

``make demo`` prints the table for the demo and keeps it in ``results/demo/diff.md``. Exit status 0,
or with ``--strict`` 1 where a verdict flipped between PASS and FAIL.

Try: ``qd diff --preset demo``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from qd.report.reference import PROJECT, reference_results

KEYS = ["task", "model", "method", "bits", "bucket"]
DECIDED = {"PASS", "FAIL"}
FLIP = "**PASS vs FAIL**"


def _cells(path: Path) -> tuple[pd.DataFrame, dict[tuple, dict]]:
    """A summary's rows and its cells: ``(task, model, method, bits, bucket)`` (None for a missing bits or
    bucket) -> the aggregated row (means over seeds, the method's label)."""
    from qd.report.collect import aggregate
    from qd.tasks import DEFAULT_KIND

    df = pd.read_csv(path)
    for col in ("bits", "bucket"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    if "kind" not in df:
        df["kind"] = DEFAULT_KIND
    cells = {}
    for row in aggregate(df).to_dict("records"):
        key = tuple(None if pd.isna(row[k]) else (int(row[k]) if k in ("bits", "bucket") else row[k]) for k in KEYS)
        cells[key] = row
    return df, cells


def cell_differences(mine: Path, reference: Path) -> pd.DataFrame:
    """Per cell (task, model, method, bits, bucket) of either summary: its label, the task's primary
    metric, its value in the reference and in this run (mean over seeds) and the difference this run -
    reference (empty where one side lacks the cell)."""
    from qd.report import rows_info

    (df_m, mine_cells), (df_r, ref_cells) = _cells(Path(mine)), _cells(Path(reference))
    primary = {}
    for df in (df_m, df_r):  # the reference's description of a task wins
        primary.update({t: rows_info(g).primary for t, g in df.groupby("task", sort=False)})
    rows = []
    for key in dict.fromkeys([*ref_cells, *mine_cells]):
        metric = primary[key[0]]
        ref, run = (None if c is None or pd.isna(c.get(f"{metric}_mean")) else float(c[f"{metric}_mean"])
                    for c in (ref_cells.get(key), mine_cells.get(key)))
        label = (ref_cells.get(key) or mine_cells[key])["label"]
        rows.append({**dict(zip(KEYS, key)), "label": label, "metric": metric, "reference": ref, "run": run,
                     "difference": run - ref if ref is not None and run is not None else None})
    return pd.DataFrame(rows, columns=[*KEYS, "label", "metric", "reference", "run", "difference"])


def agreement(reference: str | None, run: str | None) -> str:
    """``agree``, ``differs``, :data:`FLIP` (one PASS, the other FAIL), or which side lacks the claim."""
    if reference is None:
        return "only in this run"
    if run is None:
        return "only in the reference"
    if reference == run:
        return "agree"
    return FLIP if {reference, run} == DECIDED else "differs"


def _claims(path: Path) -> pd.DataFrame:
    c = pd.read_csv(path, dtype={"claim": str, "task": str})
    c["task"] = c["task"].fillna("")
    return c.set_index(["task", "claim"])


def claim_agreement(mine: Path, reference: Path) -> pd.DataFrame:
    """Per claim and task of either ``claims.csv``: its statement, the two verdicts and :func:`agreement`."""
    r, m = _claims(Path(reference)), _claims(Path(mine))
    rows = []
    for key in dict.fromkeys([*r.index, *m.index]):
        ref = r.loc[key, "verdict"] if key in r.index else None
        run = m.loc[key, "verdict"] if key in m.index else None
        statement = (r if key in r.index else m).loc[key, "statement"]
        rows.append({"task": key[0], "claim": key[1], "statement": statement, "reference": ref, "run": run,
                     "agreement": agreement(ref, run)})
    return pd.DataFrame(rows, columns=["task", "claim", "statement", "reference", "run", "agreement"])


def _num(v, sign: bool = False) -> str:
    if v is None or pd.isna(v):
        return ""
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (no path of this machine in the table)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _text(v) -> str:
    return "" if v is None or pd.isna(v) else str(v)


def _cell_name(r) -> str:
    bits = "fp32" if pd.isna(r.bits) else f"{int(r.bits)}-bit"
    bucket = "" if pd.isna(r.bucket) else f", bucket {int(r.bucket)}"
    return f"{r.model} {r.label} {bits}{bucket}: {r.metric}"


def _short(text: str, n: int = 70) -> str:
    text = "" if not isinstance(text, str) else text
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


def diff_markdown(claims: pd.DataFrame, cells: pd.DataFrame, mine: Path, reference: Path) -> str:
    """The headline counts and one table: claims (verdicts and agreement), then cells (metric and difference)."""
    flips = claims[claims["agreement"] == FLIP]
    differs = claims[claims["agreement"] == "differs"]
    both = claims[claims["reference"].notna() & claims["run"].notna()]
    d = cells["difference"].dropna().astype(float)
    lines = ["# This run against the reference record", "",
             f"This run: `{_shown(mine)}`; reference: `{_shown(reference)}`.", "",
             f"Verdicts: {int((both['agreement'] == 'agree').sum())} of {len(both)} agree, {len(differs)} differ "
             f"(one side INCONCLUSIVE, NOT COMPARABLE or NOT TESTED), {len(flips)} PASS against FAIL"
             + (": " + ", ".join(f"{t} {c}" for t, c in zip(flips["task"], flips["claim"])) if len(flips) else "")
             + "."]
    if len(d):
        worst = cells.loc[d.abs().idxmax()]
        lines.append(f"Cells: {len(d)} in both, difference this run - reference median {d.median():+.2f}, "
                     f"|difference| median {d.abs().median():.2f}, largest {worst['difference']:+.2f} "
                     f"({worst['task']} {_cell_name(worst)})"
                     + (f"; {len(cells) - len(d)} in one only" if len(cells) > len(d) else "") + ".")
    lines += ["", "| task | claim or cell | reference | this run | this run - reference | verdicts |",
              "|---|---|---|---|---|---|"]
    for r in claims.itertuples():
        lines.append(f"| {r.task} | claim {r.claim} {_short(r.statement)} | {_text(r.reference)} | {_text(r.run)} | "
                     f"| {r.agreement} |")
    for r in cells.itertuples():
        where = ("only in this run" if pd.isna(r.reference) else "only in the reference" if pd.isna(r.run)
                 else "")
        lines.append(f"| {r.task} | {_cell_name(r)} | {_num(r.reference)} | {_num(r.run)} | "
                     f"{_num(r.difference, sign=True)} | {where} |")
    return "\n".join(lines) + "\n"


def run_diff(mine: Path, reference: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``(claims, cells, markdown)`` for the results folder ``mine`` against the record folder ``reference``."""
    mine, reference = Path(mine), Path(reference)
    for folder, why in ((mine, "no finished run there: run the workflow first (make demo, or snakemake "
                               "--config preset=<preset>)"),
                        (reference, "no reference record there (reference/<preset>/results/, written by "
                                    "qd reference)")):
        for name in ("summary.csv", "claims.csv"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} does not exist: {why}")
    claims = claim_agreement(mine / "claims.csv", reference / "claims.csv")
    cells = cell_differences(mine / "summary.csv", reference / "summary.csv")
    return claims, cells, diff_markdown(claims, cells, mine, reference)


def main(argv: list[str] | None = None) -> int:
    """``qd diff --preset P [--results DIR] [--against DIR] [--out FILE] [--strict]``."""
    p = argparse.ArgumentParser(prog="qd diff", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--results", help="the finished run's results folder (default results/<preset>)")
    p.add_argument("--against", help="the reference record (default reference/<preset>/results under the project)")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument("--strict", action="store_true", help="exit 1 when a verdict is PASS on one side, FAIL on the other")
    a = p.parse_args(argv)
    mine = Path(a.results) if a.results else Path("results") / a.preset
    against = Path(a.against) if a.against else reference_results(PROJECT, a.preset)
    try:
        claims, _, text = run_diff(mine, against)
    except FileNotFoundError as e:
        print(f"qd: {e}", file=sys.stderr)
        return 1
    print(text, end="")
    if a.out:
        from qd.io import atomic_write_text

        atomic_write_text(text, Path(a.out))
    return int(a.strict and bool((claims["agreement"] == FLIP).any()))


if __name__ == "__main__":
    raise SystemExit(main())
