"""The run-to-run variance of BLEU, measured on a translation task's own seeds: the model a one-seed BLEU
interval takes its training noise from (``report.run_variance_bleu``; docs/verdicts.md).

A claim compares methods, and a method's BLEU moves from training run to training run by more than the
test set's sampling says. With several seeds per side the hierarchical bootstrap sees that spread
(``qd.report.stats``); with one seed per side it has to come from somewhere else. For accuracy that is the
binomial model (Jordan, ICLR 2024); BLEU has no such model, so it is measured:

* :func:`measure`: from the finished runs of a results folder with two seeds or more per configuration,
  the standard deviation of BLEU over the seeds of each (dataset, model, method, bits, bucket), written to
  the committed calibration file :data:`CALIBRATION_FILE` (one row per configuration, its seeds, the
  commit and the command that measured it);
* :func:`run_sd`: the standard deviation a one-seed run of a configuration is given: its own row where the
  file has one measured over :data:`MIN_OWN_SEEDS` seeds or more, else the largest measured on its dataset; where the dataset was never measured, the
  conservative model ``max(report.bleu_conservative_min_sd, report.bleu_conservative_relative_sd x BLEU)``,
  and the text says which.

Regenerate (docs/verdicts.md gives the config)::

    snakemake --cores 2 --configfile calib.yaml          # the task's runs at seeds [0, 1, 2, 3]
    python -m qd.report.calibration results/calib-numbers

Try: ``pytest tests/test_report_calibration.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CALIBRATION_FILE = Path(__file__).with_name("bleu_run_variance.csv")
COLUMNS = ["dataset", "model", "method", "bits", "bucket", "seeds", "bleu_mean", "bleu_sd", "preset", "code_version"]
KEYS = ["dataset", "model", "method", "bits", "bucket"]
MIN_OWN_SEEDS = 3  # an sd over two seeds is too rough to stand alone (it may be ~0 by chance)


def measure(results: Path, metric: str = "bleu") -> pd.DataFrame:
    """One row per configuration of the translation runs under ``results`` with two seeds or more."""
    from qd.report.collect import collect

    df = collect(Path(results))
    if df.empty or metric not in df:
        raise ValueError(f"no finished runs with {metric} under {results}")
    df = df[df[metric].notna()]
    rows = []
    for key, g in df.groupby(KEYS, dropna=False, sort=True):
        if g["seed"].nunique() < 2:
            continue
        rows.append({**dict(zip(KEYS, key)), "seeds": int(g["seed"].nunique()), "bleu_mean": float(g[metric].mean()),
                     "bleu_sd": float(g[metric].std(ddof=1)), "preset": g["preset"].iloc[0],
                     "code_version": ",".join(sorted(g["code_version"].astype(str).unique()))
                     if "code_version" in g else ""})
    if not rows:
        raise ValueError(f"no configuration under {results} has two seeds or more: nothing to measure")
    return pd.DataFrame(rows, columns=COLUMNS)


def read(path: Path | None = None) -> pd.DataFrame:
    """The calibration file (empty when it does not exist)."""
    path = Path(path) if path else CALIBRATION_FILE
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    t = pd.read_csv(path, comment="#")
    for col in ("bits", "bucket"):
        t[col] = pd.to_numeric(t[col], errors="coerce")
    return t


def _same(col: pd.Series, v) -> pd.Series:
    return col.isna() if v is None or pd.isna(v) else col == v


def run_sd(row: dict, settings: dict, table: pd.DataFrame | None = None) -> tuple[float, str]:
    """Standard deviation (BLEU points) of a one-seed run's BLEU between training runs, and where it
    comes from in words. ``row``: the run's metrics (dataset, model, method, bits, bucket, bleu)."""
    model = settings.get("run_variance_bleu", "calibration")
    floor, rel = settings.get("bleu_conservative_min_sd", 1.0), settings.get("bleu_conservative_relative_sd", 0.1)
    conservative = max(floor, rel * float(row.get("bleu") or 0.0))
    conservative_text = (f"conservative model, sd = max({floor:g}, {rel:g} x BLEU) = {conservative:.2f} BLEU "
                         "(`report.bleu_conservative_*`)")
    if model == "none":
        return 0.0, ""
    if model == "conservative":
        return conservative, conservative_text
    t = read(settings.get("bleu_calibration") or None) if table is None else table
    ds = t[t["dataset"] == row.get("dataset")]
    if ds.empty:
        return conservative, (f"{conservative_text}: the calibration file has no run of dataset "
                              f"`{row.get('dataset')}` (measure it: docs/verdicts.md)")
    own = ds[(ds["model"] == row.get("model")) & (ds["method"] == row.get("method"))
             & _same(ds["bits"], row.get("bits")) & _same(ds["bucket"], row.get("bucket"))]
    if len(own) and own.iloc[0]["seeds"] >= MIN_OWN_SEEDS:
        r = own.iloc[0]
        return float(r["bleu_sd"]), (f"calibrated, sd {r['bleu_sd']:.2f} BLEU measured over {int(r['seeds'])} seeds "
                                     f"of this configuration on `{r['dataset']}`")
    r = ds.loc[ds["bleu_sd"].idxmax()]
    return float(r["bleu_sd"]), (f"calibrated, sd {r['bleu_sd']:.2f} BLEU: the largest measured on `{r['dataset']}` "
                                 f"({r['model']} {r['method']}, {int(r['seeds'])} seeds; this configuration "
                                 f"not measured over {MIN_OWN_SEEDS} seeds or more)")


def metrics_of(results: Path, run: str) -> dict:
    path = Path(results) / run / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def command_of(preset: str) -> str:
    return f"python -m qd.report.calibration results/{preset}"


def write(table: pd.DataFrame, path: Path) -> None:
    """``table`` into the calibration file, in place of the rows of its datasets; the header names the
    command that measured each preset's rows."""
    old = read(path)
    if len(old):  # other datasets measured before stay
        old = old[~old["dataset"].isin(set(table["dataset"]))]
        table = pd.concat([old, table], ignore_index=True)
    table = table.astype({"bits": "Int64", "bucket": "Int64", "seeds": int})
    head = ("# BLEU run-to-run standard deviation per configuration (qd.report.calibration), measured by:\n"
            + "".join(f"#   {command_of(p)}\n" for p in dict.fromkeys(table["preset"])))
    Path(path).write_text(head + table.to_csv(index=False, float_format="%.4f"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qd.report.calibration", description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a results folder holding a translation task's runs at two seeds or more")
    p.add_argument("--out", default=str(CALIBRATION_FILE))
    args = p.parse_args(argv)
    try:
        table = measure(Path(args.results))
    except ValueError as e:
        print(f"qd: {e}", file=sys.stderr)
        return 1
    write(table, Path(args.out))
    print(table.to_string(index=False))
    print(f"pooled sd {np.sqrt((table['bleu_sd'] ** 2).mean()):.3f} BLEU over {len(table)} configurations; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
