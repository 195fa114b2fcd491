"""A new method against the paper's baselines: ``qd compare --method NAME [--preset P]``.

For each task, student and bit width the preset ran the method at, one row holds its primary metric
beside PM (bucketed), quantized distillation and differentiable quantization at the same bits, and for
each baseline the paired test of the difference over the test examples (McNemar's exact interval for
one seed each, a paired bootstrap over examples and seeds for several; a paired bootstrap over
sentences for BLEU): **better** or **worse** when the whole 95% interval lies on one side of zero,
**within noise** when it contains zero. The report writes the same table for every method that is not
one of the paper's (``tables/<task>_compare.md``).

Try: ``qd compare --method lsq --preset demo``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from qd.report.collect import collect, correctness, hypotheses, references, runs_of
from qd.report.stats import paired_bleu_bootstrap, paired_difference
from qd.tasks import TASKS

BASELINES = ("pm", "qd", "dq")
PAPER_METHODS = ("fp", "distill", "pm", "qt", "qd", "dq", "pretrained")


def _main_bucket(df: pd.DataFrame, task: str, method: str):
    b = df.loc[(df["task"] == task) & (df["method"] == method), "bucket"].dropna()
    return int(b.mode().iloc[0]) if len(b) else None


def paired_interval(results: Path, df: pd.DataFrame, kind: str, task: str, a: list[str], b: list[str]):
    """The interval of ``metric(a) - metric(b)`` for two lists of run folders (seeds), or None."""
    if kind == "translation":
        ha, hb = hypotheses(results, a), hypotheses(results, b)
        refs = references(results / task / "data")
        if ha is None or hb is None or refs is None:
            return None
        return paired_bleu_bootstrap(ha, hb, refs)
    ca, cb = correctness(results, a), correctness(results, b)
    if ca is None or cb is None:
        return None
    return paired_difference(ca, cb)


def verdict_word(interval) -> str:
    if interval is None:
        return "no per-example outputs"
    if interval.low > 0:
        return "better"
    if interval.high < 0:
        return "worse"
    return "within noise"


def compare_method(results: Path, method: str, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows: task, student, bits, the method's mean metric, and per baseline its mean, the difference,
    its interval and the verdict."""
    results = Path(results)
    df = collect(results) if df is None else df
    if df.empty or "method" not in df:
        # a clone holds the reference records (tables/, summary.csv) but not the run folders whose
        # per-example outputs the paired tests read
        raise ValueError(f"no finished runs under {results} (run folders are not committed: run the workflow "
                         f"first, or read the report's {results}/tables/*_compare.md)")
    mine = df[df["method"] == method]
    if mine.empty:
        raise ValueError(f"no runs of method {method!r} under {results}; methods there: "
                         f"{', '.join(sorted(df['method'].unique()))}")
    rows = []
    for (task, model, bits, bucket), g in mine.groupby(["task", "model", "bits", "bucket"], dropna=False, sort=True):
        kind = g["kind"].iloc[0]
        metric = TASKS[kind].primary
        mine_runs = list(g.sort_values("seed")["run"])
        row = {"task": task, "student": model, "bits": int(bits) if pd.notna(bits) else None,
               method: g[metric].mean(), "seeds": len(g)}
        for base in BASELINES:
            bucket_b = _main_bucket(df, task, base)
            b = runs_of(df, task, model, base, bits, bucket_b)
            if b.empty:
                row[base] = row[f"{base} diff"] = row[f"vs {base}"] = None
                continue
            interval = paired_interval(results, df, kind, task, mine_runs, list(b["run"]))
            row[base] = b[metric].mean()
            row[f"{base} diff"] = row[method] - row[base]
            row[f"vs {base}"] = (f"{verdict_word(interval)} [{interval.low:+.2f}, {interval.high:+.2f}]"
                                 if interval is not None else verdict_word(None))
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
