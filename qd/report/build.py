"""Build the report from the run folders under ``results/<preset>/``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qd.config import data_file, planned_runs
from qd.errors import MissingRun
from qd.io import atomic_write_text
from qd.report import report_files
from qd.report.checks import claim_gaussian_noise, claim_uniform_levels
from qd.report.claims import check_claims, claim_depth_speed, claims_markdown
from qd.report.collect import aggregate, collect
from qd.report.figures import accuracy_vs_bits, accuracy_vs_size, latency_vs_depth, training_curves
from qd.report.tables import accuracy_table, paper_comparison, read_targets, size_table, write_table

def only_planned(df: pd.DataFrame, cfg: dict, results: Path) -> pd.DataFrame:
    """The runs the config asks for (older runs left in the folder stay out); all must be finished."""
    planned = {r.path for r in planned_runs(cfg)}
    missing = sorted(planned - set(df["run"]))
    if missing:
        raise MissingRun(f"{len(missing)} planned runs have no metrics.json under {results}, e.g. {missing[0]}")
    return df[df["run"].isin(planned)].reset_index(drop=True)


def histories(df: pd.DataFrame, results: Path, agg: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch history of the lowest seed of every run, labelled and ordered like the tables."""
    keys = ["task", "model", "method", "bits", "bucket"]
    first = df.sort_values("seed").drop_duplicates(keys)
    frames = []
    for r in agg[keys + ["label"]].merge(first[keys + ["run"]], on=keys, how="left").itertuples():
        path = results / r.run / "history.csv"
        h = pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()
        if h.empty:
            continue
        h["task"], h["model"], h["bits"], h["label"] = r.task, r.model, r.bits, r.label
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "model", "bits", "label", "epoch", "test_accuracy"])


def _roles(df: pd.DataFrame, task: str) -> tuple[str, list[str]]:
    t = df[df["task"] == task]
    teacher = t.loc[t["role"] == "teacher", "model"].iloc[0]
    students = list(dict.fromkeys(t.loc[t["role"] == "student", "model"]))
    return teacher, students


def build_report(results: Path, figures: Path, cfg: dict | None, targets: Path) -> list[Path]:
    results, figures = Path(results), Path(figures)
    df = collect(results)
    if df.empty:
        raise MissingRun(f"no finished runs (metrics.json) under {results}")
    if cfg:
        df = only_planned(df, cfg, results)
    atomic_write_text(df.to_csv(index=False), results / "summary.csv")
    agg = aggregate(df)
    curves = histories(df, results, agg)
    paper = read_targets(targets)
    report_cfg = (cfg or {}).get("report", {"match_tolerance": 2.0, "competitive_tolerance": 1.0})
    speed_claims = depth_outputs(results, figures)
    per_task = {}
    for task in df["task"].unique():
        teacher, students = _roles(df, task)
        if cfg:
            students = [s for s in cfg["tasks"][task]["models"]["students"] if s in students]
        dataset = df.loc[df["task"] == task, "dataset"].iloc[0]
        tables = results / "tables"
        write_table(accuracy_table(agg, task, students), tables / f"{task}_accuracy",
                    f"{task}: test accuracy (%) and model size",
                    "Rows are methods, columns student x bits; each cell is the test accuracy of the final "
                    "quantized weights (mean ± std over seeds where there are several) and the size of the "
                    "compressed model file on disk (tables/*_sizes.md puts the paper's formula beside it). "
                    "Teacher: " + _teacher_line(agg, task, teacher))
        write_table(size_table(agg, task), tables / f"{task}_sizes", f"{task}: model sizes and latency",
                    "fp32 size; the paper's formula (Huffman-coded level indices + two fp32 scalars per bucket + "
                    "fp32 for unquantized parameters); the bytes of the compressed file on disk (the same plus "
                    "code table, headers, point tables and BatchNorm statistics); the Huffman mean code length; "
                    "forward latency of the final model (simulated quantization: fp32 arithmetic, so a quantized "
                    "model runs at its architecture's fp32 speed).", index=False)
        write_table(paper_comparison(agg, paper, dataset, task), tables / f"{task}_paper",
                    f"{task}: the paper's numbers beside ours",
                    f"Rows are the paper's published cells for dataset `{dataset}` (config/paper_targets.csv; NR = "
                    "not retrieved). An empty table means the paper reports nothing on this dataset.", index=False)
        runs = list(df.loc[df["task"] == task, "run"])
        first_student = students[0]
        distilled = df[(df["task"] == task) & (df["model"] == first_student) & (df["method"] == "distill")]
        extra = [claim_uniform_levels(results, runs), *speed_claims]
        if not distilled.empty:
            extra.append(claim_gaussian_noise(results / distilled["run"].iloc[0], data_file(results, task)))
        per_task[task] = check_claims(agg, task, teacher, students, report_cfg, extra)
        accuracy_vs_bits(agg, task, teacher, students, figures / f"{task}_accuracy_vs_bits")
        accuracy_vs_size(agg, task, teacher, figures / f"{task}_accuracy_vs_size")
        training_curves(curves, task, students, figures / f"{task}_training_curves")
    preset = df["preset"].iloc[0]
    atomic_write_text(claims_markdown(per_task, preset), results / "claims.md")
    return report_files(results, figures, list(per_task), bool(speed_claims))


def depth_outputs(results: Path, figures: Path) -> list:
    """Table, figure and claim 2 from ``latency_depth.csv`` when the depth timing ran."""
    path = results / "latency_depth.csv"
    if not path.exists():
        return []
    lat = pd.read_csv(path)
    table = lat[["group", "model", "depth", "width", "params", "median_ms", "iqr_ms", "relative_time",
                 "paper_seconds", "device", "threads", "batch"]]
    write_table(table, results / "tables" / "latency_depth", "Latency against depth",
                "Median forward-pass time on this machine (IQR over repeats); relative_time is against the "
                "deepest model of each group; paper_seconds is the paper's ImageNet test-set time on 4 GPUs.",
                index=False)
    latency_vs_depth(lat, figures / "latency_depth")
    return claim_depth_speed(lat)



def _teacher_line(agg: pd.DataFrame, task: str, teacher: str) -> str:
    t = agg[(agg["task"] == task) & (agg["model"] == teacher)]
    if t.empty:
        return "not run."
    r = t.iloc[0]
    return f"{teacher}, {r.accuracy_mean:.2f}% with {int(r.params_mean):,} parameters ({r.size_fp32_mean / 1e6:.3f} MB fp32)."
