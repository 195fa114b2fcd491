"""Build the report from the run folders under ``results/<preset>/``: this module only orchestrates.

``build_report`` writes ``summary.csv`` (one row per run, the timing job's latency merged in, from
``qd.report.collect``), per task its tables (``qd.report.tables``, ``qd.report.compare``), its figures
(``qd.report.figures``), and ``claims.md``/``claims.csv`` with every verdict (the registered claims,
``qd.report.claims.registry``, which write their own tables). What differs between task kinds comes
from the kinds' descriptions (``qd.report.rows_info``).

Try: ``qd report --config config/config.yaml``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from qd.config import SCHEMA_PATH, data_folder, planned_runs
from qd.errors import MissingRun
from qd.io import atomic_write_text
from qd.report import report_files, rows_info
from qd.report.claims.base import Evidence
from qd.report.claims.page import claims_frame, claims_markdown
from qd.report.claims.registry import check_claims
from qd.report.claims.speed import depth_outputs
from qd.report.collect import aggregate, collect, labels_by_method
from qd.report.compare import write_comparisons
from qd.report.figures import metric_vs_bits, metric_vs_size, training_curves, training_hours
from qd.report.paper import PaperTargets
from qd.report.onnx_table import write_onnx_table
from qd.report.tables import write_task_tables

REPORT_SCHEMA = SCHEMA_PATH.parent / "report.schema.yaml"


def report_settings(cfg: dict | None) -> dict:
    """The ``report:`` block: the config's values over the schema's defaults."""
    schema = yaml.safe_load(REPORT_SCHEMA.read_text())
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    return {**defaults, **((cfg or {}).get("report") or {})}


def only_planned(df: pd.DataFrame, cfg: dict, results: Path) -> pd.DataFrame:
    """The runs the config asks for (older runs left in the folder stay out); all must be finished."""
    planned = {r.path for r in planned_runs(cfg)}
    missing = sorted(planned - set(df["run"]))
    if missing:
        raise MissingRun(f"{len(missing)} planned runs have no metrics.json under {results}, e.g. {missing[0]}")
    return df[df["run"].isin(planned)].reset_index(drop=True)


def histories(df: pd.DataFrame, results: Path, agg: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch history of the lowest seed of every run, labelled and ordered like the tables, with
    ``core_hours``: the run's training time up to each epoch's end (its ``seconds`` summed) times the
    threads its spec gave it."""
    keys = ["task", "model", "method", "bits", "bucket"]
    first = df.sort_values("seed").drop_duplicates(keys)
    frames = []
    for r in agg[keys + ["label"]].merge(first[keys + ["run"]], on=keys, how="left").itertuples():
        path = results / r.run / "history.csv"
        h = pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()
        if h.empty:
            continue
        h["task"], h["model"], h["bits"], h["label"] = r.task, r.model, r.bits, r.label
        if "seconds" in h:
            h["core_hours"] = h["seconds"].cumsum() * run_threads(results / r.run) / 3600
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["task", "model", "bits", "label", "epoch"])


def run_threads(folder: Path) -> int:
    """The threads a run's spec gave it (``spec.json``'s ``threads``; 1 where it has none)."""
    path = folder / "spec.json"
    return (json.loads(path.read_text()).get("threads") or 1) if path.exists() else 1


def _roles(df: pd.DataFrame, task: str) -> tuple[str, list[str]]:
    t = df[df["task"] == task]
    teachers = t.loc[t["role"] == "teacher", "model"]
    if teachers.empty:
        raise MissingRun(f"task {task}: no teacher run among the results")
    students = list(dict.fromkeys(t.loc[t["role"] == "student", "model"]))
    return teachers.iloc[0], students


def build_report(results: Path, figures: Path, cfg: dict | None, targets: Path) -> list[Path]:
    results, figures = Path(results), Path(figures)
    df = collect(results)
    if df.empty:
        raise MissingRun(f"no finished runs (metrics.json) under {results}")
    planned = bool(cfg and cfg.get("tasks"))  # a full config (not only its report block) names the runs
    if planned:
        df = only_planned(df, cfg, results)
    atomic_write_text(df.to_csv(index=False), results / "summary.csv")
    agg = aggregate(df)
    curves = histories(df, results, agg)
    paper = PaperTargets.read(targets)
    settings = report_settings(cfg)
    labels = labels_by_method(agg)
    depth_claims = depth_outputs(results, figures, paper, settings)
    infos = {task: rows_info(rows) for task, rows in df.groupby("task", sort=False)}
    recurrent = next(((t, info.kind) for t, info in infos.items() if info.recurrent), None)
    per_task, task_facts = {}, {}
    for task in df["task"].unique():
        info = infos[task]
        teacher, students = _roles(df, task)
        if planned:
            students = [s for s in cfg["tasks"][task]["models"]["students"] if s in students]
        dataset = df.loc[df["task"] == task, "dataset"].iloc[0]
        task_facts[task] = {"kind": info.kind, "dataset": dataset, "metric": info.primary}
        ev = Evidence(df, agg, task, teacher, students, results, paper, settings, data_folder(results, task), info,
                      depth_claims, recurrent, cfg)
        write_task_tables(results / "tables", task, info, agg, paper, dataset, teacher, students, labels)
        write_comparisons(results, df[df["task"] == task], task)
        write_onnx_table(df, task, results / "tables")
        per_task[task] = check_claims(ev)
        metric_vs_bits(agg, task, teacher, students, figures / f"{task}_{info.primary}_vs_bits", info.primary,
                       info.label, paper, dataset, labels)
        metric_vs_size(agg, task, teacher, figures / f"{task}_{info.primary}_vs_size", info.primary, info.label,
                       info.higher_is_better)
        training_curves(curves, task, students, figures / f"{task}_training_curves", info.epoch_metric,
                        not info.epoch_higher_is_better)
        training_hours(curves, task, [teacher, *students], figures / f"{task}_training_hours", info.epoch_metric,
                       not info.epoch_higher_is_better)
    preset = df["preset"].iloc[0]
    atomic_write_text(claims_markdown(per_task, preset, settings, task_facts, depth_claims), results / "claims.md")
    atomic_write_text(claims_frame(per_task, depth_claims).to_csv(index=False), results / "claims.csv")
    return report_files(results, figures, infos, bool(depth_claims))
