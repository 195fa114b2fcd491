"""A new method against the paper's baselines: ``qd compare --method NAME [--preset P]``.

For each task, student and bit width the preset ran the method at, one row holds its primary metric
beside PM (bucketed), quantized distillation and differentiable quantization at the same bits, and for
each baseline the paired test of the difference over the test examples, as the task kind pairs runs
(``qd.report.paired``: McNemar's exact interval for one seed each, a paired bootstrap over examples
and seeds for several; a paired bootstrap over sentences for BLEU): **better** or **worse** when the
whole 95% interval lies on one side of zero, **within noise** when it contains zero (for a
lower-is-better metric, **better** when the method's metric is lower). The report writes the same
table for every method that is not one of the paper's (``tables/<task>_compare.md``, once per method).

Try: ``qd compare --method lsq --preset demo``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from qd.config import data_folder
from qd.io import atomic_write_text
from qd.report import rows_info
from qd.report.collect import collect, main_bucket, runs_of
from qd.report.paired import paired_interval

BASELINES = ("pm", "qd", "dq")
PAPER_METHODS = ("fp", "distill", "pm", "qt", "qd", "dq", "pretrained")


def verdict_word(interval, higher_is_better: bool = True) -> str:
    if interval is None:
        return "no per-example outputs"
    if interval.low > 0:
        return "better" if higher_is_better else "worse"
    if interval.high < 0:
        return "worse" if higher_is_better else "better"
    return "within noise"


def compare_method(results: Path, method: str, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows: task, student, bits, the method's mean metric, and per baseline its mean, the difference,
    its interval and the verdict."""
    results = Path(results)
    df = collect(results) if df is None else df
    if df.empty or "method" not in df:
        # a fresh clone holds the reference records (reference/<preset>/) but no run folders, whose
        # per-example outputs the paired tests read
        raise ValueError(f"no finished runs under {results} (run folders are not committed: run the workflow "
                         f"first, or read a reference's tables: reference/<preset>/results/tables/*_compare.md)")
    mine = df[df["method"] == method]
    if mine.empty:
        raise ValueError(f"no runs of method {method!r} under {results}; methods there: "
                         f"{', '.join(sorted(df['method'].unique()))}")
    rows = []
    for (task, model, bits, bucket), g in mine.groupby(["task", "model", "bits", "bucket"], dropna=False, sort=True):
        task_rows = df[df["task"] == task]
        info = rows_info(task_rows)
        metric = info.primary
        mine_runs = list(g.sort_values("seed")["run"])
        row = {"task": task, "student": model, "bits": int(bits) if pd.notna(bits) else None,
               method: g[metric].mean(), "seeds": len(g)}
        for base in BASELINES:
            b = runs_of(df, task, model, base, bits, main_bucket(task_rows, base))
            if b.empty:
                row[base] = row[f"{base} diff"] = row[f"vs {base}"] = None
                continue
            interval = paired_interval(info, results, mine_runs, list(b["run"]), data_folder(results, task))
            row[base] = b[metric].mean()
            row[f"{base} diff"] = row[method] - row[base]
            word = verdict_word(interval, info.higher_is_better)
            row[f"vs {base}"] = f"{word} [{interval.low:+.2f}, {interval.high:+.2f}]" if interval is not None else word
        rows.append(row)
    return pd.DataFrame(rows)


def compare_markdown(table: pd.DataFrame, method: str, results: Path) -> str:
    shown = table.copy()
    for c in shown.columns:
        if shown[c].dtype.kind == "f":
            shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    head = (f"# {method} against the paper's baselines\n\nRuns under `{results}`. Each baseline at the same "
            "student and bits (PM with its main bucket size); the verdict is the paired test of the difference "
            "over the test examples (95% interval in brackets): better / worse when the interval lies on one "
            "side of 0, within noise when it contains 0.\n\n")
    return head + shown.to_markdown(index=False) + "\n"


def write_comparisons(results: Path, df: pd.DataFrame, task: str) -> None:
    """``tables/<task>_compare``: every method that is not the paper's against PM, QD and DQ (each
    method's comparison computed once, for both the Markdown and the CSV)."""
    tables = {m: compare_method(results, m, df) for m in other_methods(df)}
    table = pd.concat([t.assign(method=m) for m, t in tables.items()], ignore_index=True) if tables \
        else pd.DataFrame()
    stem = Path(results) / "tables" / f"{task}_compare"
    if table.empty:
        body = "No method besides the paper's ran on this task: nothing to compare.\n"
    else:
        body = "\n".join(compare_markdown(t, m, results) for m, t in tables.items())
    atomic_write_text(body, stem.with_suffix(".md"))
    atomic_write_text(table.to_csv(index=False), stem.with_suffix(".csv"))


def other_methods(df: pd.DataFrame) -> list[str]:
    """Quantized methods of a summary that are not the paper's: the ones the report compares."""
    q = df[df["bits"].notna() & ~df["method"].isin(PAPER_METHODS)]
    return sorted(q["method"].unique())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qd compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True)
    p.add_argument("--preset", default="demo", help="the preset whose results/<preset>/ folder to read")
    p.add_argument("--results", help="a results folder (default results/<preset>)")
    args = p.parse_args(argv)
    results = Path(args.results) if args.results else Path("results") / args.preset
    try:
        table = compare_method(results, args.method)
    except ValueError as e:
        print(f"qd: {e}", file=sys.stderr)
        return 1
    print(compare_markdown(table, args.method, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
