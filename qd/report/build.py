"""Build the report from the run folders under ``results/<preset>/``.

``build_report`` writes ``summary.csv`` (one row per run, the timing job's latency merged in), per
task its own-layout table, size table, paper-layout table beside the paper's numbers, the integer and
noise tables of claims 5 and 6, its figures, and ``claims.md``/``claims.csv`` with every verdict.

Try: ``qd report --config config/config.yaml``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from qd.config import SCHEMA_PATH, planned_runs
from qd.errors import MissingRun
from qd.io import atomic_write_text
from qd.report import report_files
from qd.report.claims import (Claim, Evidence, check_claims, claim_depth_speed, claim_trained_speed, claims_frame,
                              claims_markdown, untested)
from qd.report.collect import LATENCY_FILE, aggregate, collect, labels_by_method, runs_of
from qd.report.figures import latency_vs_depth, metric_vs_bits, metric_vs_size, training_curves
from qd.report.paper import PaperTargets, classification_layout, paper_join, translation_layout
from qd.report.stats import INCONCLUSIVE
from qd.report.tables import accuracy_table, size_table, write_table
from qd.tasks import TASKS

ARTEFACT = "model.qda"
SPLIT = "split.pt"
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
        columns=["task", "model", "bits", "label", "epoch"])


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
    kinds = df.groupby("task")["kind"].first().to_dict()
    recurrent = next((t for t, k in kinds.items() if k == "translation"), None)
    per_task, task_facts = {}, {}
    for task in df["task"].unique():
        kind = kinds[task]
        info = TASKS[kind]
        teacher, students = _roles(df, task)
        if planned:
            students = [s for s in cfg["tasks"][task]["models"]["students"] if s in students]
        dataset = df.loc[df["task"] == task, "dataset"].iloc[0]
        task_facts[task] = {"kind": kind, "dataset": dataset, "metric": info.primary}
        folder = results / task / "data"
        ev = Evidence(df, agg, task, teacher, students, results, paper, settings, folder)
        write_task_tables(results / "tables", task, kind, agg, paper, dataset, teacher, students, labels)
        write_comparisons(results, df[df["task"] == task], task)
        extra: list[Claim] = list(depth_claims)
        if (results / LATENCY_FILE).exists():
            extra.append(claim_trained_speed(ev, model_depths(df, results, task, [teacher, *students])))
        if kind == "classification":
            extra += classification_checks(ev, df, results, task, settings, cfg)
        per_task[task] = check_claims(ev, extra, recurrent)
        metric_vs_bits(agg, task, teacher, students, figures / f"{task}_{info.primary}_vs_bits", info.primary,
                       info.label, paper, dataset, labels)
        metric_vs_size(agg, task, teacher, figures / f"{task}_{info.primary}_vs_size", info.primary, info.label)
        training_curves(curves, task, students, figures / f"{task}_training_curves", info.epoch_metric,
                        not info.epoch_higher_is_better)
    preset = df["preset"].iloc[0]
    atomic_write_text(claims_markdown(per_task, preset, settings, task_facts), results / "claims.md")
    atomic_write_text(claims_frame(per_task).to_csv(index=False), results / "claims.csv")
    return report_files(results, figures, kinds, bool(depth_claims))


def write_comparisons(results: Path, df: pd.DataFrame, task: str) -> None:
    """``tables/<task>_compare``: every method that is not the paper's against PM, QD and DQ."""
    from qd.report.compare import compare_markdown, compare_method, other_methods

    methods = other_methods(df)
    frames = [compare_method(results, m, df).assign(method=m) for m in methods]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    stem = results / "tables" / f"{task}_compare"
    if table.empty:
        body = "No method besides the paper's ran on this task: nothing to compare.\n"
    else:
        body = "\n".join(compare_markdown(compare_method(results, m, df), m, results) for m in methods)
    atomic_write_text(body, stem.with_suffix(".md"))
    atomic_write_text(table.to_csv(index=False), stem.with_suffix(".csv"))


def write_task_tables(tables: Path, task: str, kind: str, agg: pd.DataFrame, paper: PaperTargets, dataset: str,
                      teacher: str, students: list[str], labels: dict) -> None:
    info = TASKS[kind]
    metrics = [info.primary] + (["ppl"] if kind == "translation" else [])
    write_table(accuracy_table(agg, task, students, metrics), tables / f"{task}_{info.primary}",
                f"{task}: {info.label} and model size",
                "Rows are methods, columns student x bits; each cell is the " + " / ".join(metrics) + " of the final "
                "quantized weights (mean ± std and number of seeds where there are several; one seed otherwise) and "
                "the size of the compressed model file on disk (tables/*_sizes.md puts the paper's formula beside it). "
                "Teacher: " + _teacher_line(agg, task, teacher, info.primary))
    write_table(size_table(agg, task), tables / f"{task}_sizes", f"{task}: model sizes and latency",
                "fp32 size; the paper's formula (Huffman-coded level indices + two fp32 scalars per bucket + "
                "fp32 for unquantized parameters); the bytes of the compressed file on disk (the same plus "
                "code table, headers, point tables and BatchNorm statistics), which claims and figures use; the "
                "Huffman mean code length; forward latency of the final model (simulated quantization: fp32 "
                "arithmetic, so a quantized model runs at its architecture's fp32 speed).", index=False)
    join = paper_join(agg, paper, dataset, task, metrics)
    stem = tables / f"{task}_paper"
    if paper.has(dataset):
        body = (classification_layout(join, students, teacher, labels, info.primary) if kind == "classification"
                else translation_layout(join, [teacher, *students], labels, tuple(metrics)))
        caption = (f"The paper's cells for dataset `{dataset}` (config/paper_targets.csv; NR = not retrieved) beside "
                   "ours: mean ± std over seeds (n = seeds) and the difference ours - paper. A cell we did not run, or "
                   "one the paper does not print, is blank.")
    else:
        body = f"The paper prints no numbers for dataset `{dataset}`: this preset keeps its own layout " \
               f"(tables/{task}_{info.primary}.md).\n"
        caption = ""
    text = "\n\n".join(x for x in (f"# {task}: the paper's numbers beside ours", caption, body.strip()) if x)
    atomic_write_text(text + "\n", stem.with_suffix(".md"))
    atomic_write_text(join.to_csv(index=False), stem.with_suffix(".csv"))


def _teacher_line(agg: pd.DataFrame, task: str, teacher: str, metric: str) -> str:
    t = agg[(agg["task"] == task) & (agg["model"] == teacher)]
    if t.empty:
        return "not run."
    r = t.iloc[0]
    return (f"{teacher}, {r[f'{metric}_mean']:.2f} with {int(r.params_mean):,} parameters "
            f"({r.size_fp32_mean / 1e6:.3f} MB fp32).")


def depth_outputs(results: Path, figures: Path, paper: PaperTargets, settings: dict) -> list[Claim]:
    """Table, figure and claims 2a/2b from ``latency_depth.csv`` when the depth timing ran."""
    path = results / "latency_depth.csv"
    if not path.exists():
        return []
    lat = pd.read_csv(path)
    names = lat["model"].str.lower().str.replace("-", "", regex=False)
    lat["paper_seconds"] = [paper.speed(n) for n in names]
    table = lat[["group", "model", "depth", "width", "params", "median_ms", "iqr_ms", "relative_time",
                 "paper_seconds", "device", "threads", "batch"]]
    write_table(table, results / "tables" / "latency_depth", "Latency against depth",
                "Median forward-pass time on this machine (IQR over repeats); relative_time is against the "
                "deepest model of each group; paper_seconds is the paper's ImageNet test-set time on 4 GPUs "
                "(config/paper_targets.csv).", index=False)
    latency_vs_depth(lat, figures / "latency_depth", {n: paper.speed(n) for n in names})
    return claim_depth_speed(lat, paper, settings)


# ---------------------------------------------------------------------- claims on the saved models
def _artefact(results: Path, run: str) -> Path:
    path = results / run / ARTEFACT
    if not path.exists():
        raise MissingRun(f"{path} does not exist: the run {run} has not finished")
    return path


def model_depths(df: pd.DataFrame, results: Path, task: str, models: list[str]) -> dict[str, int]:
    """Layers with weights of each model's FP run (counted on the saved model)."""
    from qd.report.integer import load_run, weight_depth

    out = {}
    for m in models:
        r = runs_of(df, task, m, "fp")
        if len(r) and (results / r["run"].iloc[0] / ARTEFACT).exists():
            out[m] = weight_depth(load_run(results / r["run"].iloc[0] / ARTEFACT)[0])
    return out


def _rounding(results: Path, run: str, cfg: dict | None) -> str:
    spec = results / run / "spec.json"
    if spec.exists():
        return json.loads(spec.read_text()).get("quant", {}).get("rounding", "deterministic")
    return ((cfg or {}).get("quant") or {}).get("rounding", "deterministic")


def classification_checks(ev: Evidence, df: pd.DataFrame, results: Path, task: str, settings: dict,
                          cfg: dict | None) -> list[Claim]:
    """Claims 5 and 6 on the saved models and the task's test images; their tables."""
    tables = results / "tables"
    data = results / task / "data" / SPLIT  # the classification adapter's prepared file
    if not data.exists():
        why = f"needs the prepared test data {data}"
        for name in ("integer", "noise"):
            write_table(pd.DataFrame(), tables / f"{task}_{name}", f"{task}: {name}", why, index=False)
        return [untested("5", "Uniformly quantized students run on low-precision integer inference stacks.", why),
                untested("6", "Weight quantization acts like additive Gaussian noise on layer outputs.", why)]
    from qd.data import load_splits

    x, y = load_splits(data).test
    models = SavedModels(results)
    return [claim_integer(ev, df, models, task, settings, x, y),
            claim_noise(ev, df, models, task, settings, x, cfg)]


class SavedModels:
    """``(model, codes)`` of saved runs, each file read once (claims 5 and 6 share PM students)."""

    def __init__(self, results: Path, keep: int = 64):
        self.results, self.keep, self.cache = results, keep, {}

    def __call__(self, run: str):
        if run not in self.cache:
            from qd.report.integer import load_run

            if len(self.cache) >= self.keep:
                self.cache.pop(next(iter(self.cache)))
            model, codes, _ = load_run(_artefact(self.results, run))
            self.cache[run] = (model, codes)
        return self.cache[run]


def claim_integer(ev: Evidence, df: pd.DataFrame, models: SavedModels, task: str, settings: dict, x, y) -> Claim:
    from qd.report.integer import check_integer_model, check_line, check_rows, quantized_layers, verdict_of

    n = min(settings["integer_examples"], len(y))
    c = Claim("5", "Uniformly quantized students run on low-precision integer inference stacks (TensorRT, FPGAs).",
              f"every uniformly quantized student run from its integer codes (b-bit weights, per-bucket scale and "
              f"offset, {settings['integer_activation_bits']}-bit activations, integer sums per bucket segment): "
              f"accuracy >= simulated - {settings['integer_tolerance']:g} points (`report.integer_tolerance`) and the "
              f"same label on >= {settings['integer_min_agreement']:.0%} of the examples "
              f"(`report.integer_min_agreement`), on {n} test examples (`report.integer_examples`)")
    checks = []
    quantized = df[(df["task"] == task) & df["bits"].notna()].sort_values("seed")
    for _, r in quantized.drop_duplicates(["model", "method", "bits", "bucket"]).iterrows():
        if r.get("uniform_grid") is False or (isinstance(r.get("uniform_grid"), float) and r["uniform_grid"] == 0):
            continue  # the method says its codes are not an even grid (DQ's points, a codebook)
        model, codes = models(r["run"])
        if not quantized_layers(model, codes):
            continue  # non-uniform points (DQ) or nothing quantized: not the claim's students
        checks.append(check_integer_model(model, codes, x[:n], y[:n], settings, r["run"],
                                          None if pd.isna(r["bucket"]) else int(r["bucket"]),
                                          settings["bootstrap_seed"]))
    write_table(pd.DataFrame(check_rows(checks)), models.results / "tables" / f"{task}_integer",
                f"{task}: quantized students run from their integer codes",
                "Per model (lowest seed): accuracy of the simulated model and of the integer path, their paired "
                "difference, the share of examples labelled alike, the largest integer accumulator, how the buckets "
                "sit on output channels (channels spanning more than one bucket cannot take one per-channel scale), "
                "and the accuracy after re-quantizing those channels with one bucket each (same bits; 8 bits).",
                index=False)
    if not checks:
        c.evidence.append("no uniformly quantized student in this preset")
        return c
    c.verdict = c.measured = verdict_of(checks)
    c.evidence = [check_line(k) for k in checks]
    c.seeds, c.n_test = "lowest seed of each model", n
    worst = min(checks, key=lambda k: k.interval.low)
    c.summary = (f"{sum(k.verdict == 'PASS' for k in checks)} of {len(checks)} models hold; weakest {worst.run}: "
                 f"{worst.interval.describe()}, same label on {worst.agreement:.1%}")
    _, c.models = ev.comparability([ev.teacher, *ev.students])
    return c


def claim_noise(ev: Evidence, df: pd.DataFrame, models: SavedModels, task: str, settings: dict, x, cfg) -> Claim:
    from qd.report.noise import falls_with_bits, layer_noise, noise_line, noise_rows, noise_verdict

    n = min(settings["noise_examples"], len(x))
    c = Claim("6", "Weight quantization acts like additive Gaussian noise on layer outputs, with a variance that "
                   "depends on the number of levels.",
              f"PM students (distilled weights quantized with the rounding of the preset) on {n} test examples "
              f"(`report.noise_examples`), every quantized layer and bit width: output error |skewness| < "
              f"{settings['noise_max_skewness']:g}, |excess kurtosis| < {settings['noise_max_excess_kurtosis']:g}, "
              f"mean square within {settings['noise_variance_factor']:g}x of the independent-rounding-noise model, "
              "falling as bits grow")
    rows = []
    bucket = ev.main_bucket("pm")
    for s in ev.students:
        fp = runs_of(df, task, s, "distill")
        pm = df[(df["task"] == task) & (df["model"] == s) & (df["method"] == "pm")]
        pm = pm[pm["bucket"].isna()] if bucket is None else pm[pm["bucket"] == bucket]
        if fp.empty or pm.empty:
            continue
        seed = int(fp["seed"].iloc[0])
        pm = pm[pm["seed"] == seed]
        if pm.empty:
            continue
        fp_model = models(fp["run"].iloc[0])[0]
        quantized = {int(r["bits"]): models(r["run"]) for _, r in pm.iterrows()}
        rounding = _rounding(models.results, pm["run"].iloc[0], cfg)
        rows += layer_noise(fp_model, quantized, x[:n], settings, rounding, s, settings["bootstrap_seed"])
    write_table(pd.DataFrame(noise_rows(rows)), models.results / "tables" / f"{task}_noise",
                f"{task}: output error of quantized layers (claim 6)",
                "Per student, layer and bit width: skewness and excess kurtosis of the output error standardised per "
                "unit (intervals: bootstrap over test examples), its mean square against the additive-noise model "
                "(each weight's rounding error independent, step^2/12 for round-to-nearest), and the verdicts.",
                index=False)
    if not rows:
        c.evidence.append("needs a distilled student and its PM runs (the trained weights and their rounding)")
        return c
    c.verdict = c.measured = noise_verdict(rows)
    c.evidence = [noise_line(r) for r in rows]
    bad = falls_with_bits(rows)
    if bad:
        c.evidence.append("the error does not fall as bits grow in: " + ", ".join(bad))
    c.seeds, c.n_test = "lowest seed", n
    counts = {v: sum(r.verdict == v for r in rows) for v in ("PASS", "INCONCLUSIVE", "FAIL")}
    c.summary = (f"{len(rows)} layer x bit cells: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                 + (f"; not falling with bits: {', '.join(bad)}" if bad else ""))
    _, c.models = ev.comparability([ev.teacher, *ev.students])
    if c.verdict == INCONCLUSIVE:
        c.evidence.append("INCONCLUSIVE: some interval straddles its threshold; more test examples would settle it")
    return c
