"""End to end: the Snakemake workflow on a tiny config in a temporary folder.

Checks the produced summary (one row per planned run, with the result-row fields), the paper-layout
tables, claims.md, the figures, that a finished DAG has nothing left to do, and that a DAG killed
half-way finishes with --rerun-incomplete without redoing finished runs.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, env, qd, snakemake, workflow_copy
from qd.config import load_config, planned_runs

ROW_FIELDS = {
    "task", "dataset", "model", "params", "method", "bits", "bucket", "policy", "seed", "accuracy", "size_fp32",
    "size_analytic", "huffman_bits_per_weight", "epochs", "reporting_rule", "teacher_id", "config_hash",
    "code_version", "torch", "python", "device", "wall_time",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("workflow"))
    proc = snakemake(root, "--cores", "2", "--configfile", "configs/tiny.yaml", "--printshellcmds")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_summary_has_one_row_per_planned_run(tiny_run):
    cfg = load_config(tiny_run / "configs" / "tiny.yaml")
    planned = {r.path for r in planned_runs(cfg)}
    df = pd.read_csv(tiny_run / "results" / "tiny" / "summary.csv")
    assert set(df["run"]) == planned
    assert len(df) == len(planned) == 8  # teacher + fp, distill, pm x 2 buckets, qt, qd, dq at 2 bits
    assert ROW_FIELDS <= set(df.columns)
    assert df["accuracy"].between(0, 100).all()
    # quantized rows: analytic size below fp32, Huffman code at most 2 bits for a 2-bit quantizer
    q = df[df["bits"].notna()]
    assert (q["size_analytic"] < q["size_fp32"]).all()
    assert q.loc[q["method"] != "dq", "huffman_bits_per_weight"].le(2.0).all()
    # students that read the teacher carry its hash; the others do not
    assert df.loc[df["method"].isin(["distill", "qd"]), "teacher_id"].notna().all()
    assert df.loc[df["method"].isin(["fp", "qt"]), "teacher_id"].isna().all()


def test_metrics_row_matches_its_folder(tiny_run):
    run = tiny_run / "results" / "tiny" / "digits" / "student3" / "qd" / "b2-d256" / "seed0"
    row = json.loads((run / "metrics.json").read_text())
    assert (row["model"], row["method"], row["bits"], row["bucket"], row["seed"]) == ("student3", "qd", 2, 256, 0)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    # the reported accuracy is the final epoch's quantized-weight accuracy
    assert history["test_accuracy"].iloc[-1] == pytest.approx(row["accuracy"])
    assert not (run / "checkpoint.pt").exists()


def test_tables_claims_and_figures(tiny_run):
    results, figures = tiny_run / "results" / "tiny", tiny_run / "figures" / "tiny"
    table = pd.read_csv(results / "tables" / "digits_accuracy.csv", index_col=0)
    assert "Quantized distillation" in table.index and "PM quantization (no bucket)" in table.index
    assert list(table.columns) == ["student3 · fp32", "student3 · 2-bit"]
    cell = table.loc["Quantized distillation", "student3 · 2-bit"]
    summary = pd.read_csv(results / "summary.csv")
    acc = summary.loc[(summary["method"] == "qd"), "accuracy"].iloc[0]
    assert cell.startswith(f"{acc:.2f} · ")
    claims = (results / "claims.md").read_text()
    for n in ("| 1 |", "| 3a |", "| 3b |", "| 3c |", "| 5 |", "| 6 |"):
        assert n in claims
    verdicts = sum(claims.count(f"**{v}**") for v in ("PASS", "FAIL", "INCONCLUSIVE", "NOT COMPARABLE"))
    assert verdicts >= 6
    for name in ("accuracy_vs_bits", "accuracy_vs_size", "training_curves"):
        png = (figures / f"digits_{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
        assert (figures / f"digits_{name}.pdf").read_bytes()[:4] == b"%PDF"


def test_finished_dag_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "-n", "--configfile", "configs/tiny.yaml")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _planned_jobs(root: Path, change: dict) -> list[tuple[str, str]]:
    """``(rule, run folder or output)`` of every job ``snakemake -n`` would run after a config change."""
    import yaml

    (root / "change.yaml").write_text(yaml.safe_dump(change))
    proc = snakemake(root, "-n", "--configfile", "configs/tiny.yaml", "change.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs, rule = [], None
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rule = line[5:-1]
        elif line.startswith("output:") and rule:
            first = line.split(":", 1)[1].strip().split(",")[0]
            jobs.append((rule, str(Path(first).parent) if rule in ("teacher", "student") else first))
            rule = None
    return sorted(jobs)


def test_more_bits_rerun_only_the_new_runs(tiny_run):
    jobs = _planned_jobs(tiny_run, {"quant": {"bits": [2, 4]}})
    runs = [path for rule, path in jobs if rule in ("teacher", "student")]
    base = "results/tiny/digits/student3"
    assert runs == sorted(f"{base}/{m}/b4-{b}/seed0" for m, b in
                          [("pm", "d256"), ("pm", "nobucket"), ("qt", "d256"), ("qd", "d256"), ("dq", "d256")])
    assert {rule for rule, _ in jobs} == {"student", "latency", "report"}  # no teacher, no data


def test_new_temperature_reruns_the_distilled_runs_and_what_derives_from_them(tiny_run):
    jobs = _planned_jobs(tiny_run, {"distill": {"temperature": 1.0}})
    runs = [path.removeprefix("results/tiny/digits/") for rule, path in jobs if rule in ("teacher", "student")]
    # distill, qd, dq read the temperature; pm and dq start from the distilled student; fp, qt and the teacher do not
    assert runs == ["student3/distill/fp32/seed0", "student3/dq/b2-d256/seed0", "student3/pm/b2-d256/seed0",
                    "student3/pm/b2-nobucket/seed0", "student3/qd/b2-d256/seed0"]


def test_console_shows_one_short_line_per_job(tiny_run):
    log = sorted((tiny_run / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    commands = [line.strip().removeprefix("Shell command: ") for line in log.splitlines()
                if line.strip().removeprefix("Shell command: ").startswith("qd ")]
    assert commands and all(len(c) < 200 for c in commands)
    train = next(c for c in commands if c.startswith("qd train"))
    assert train.startswith("qd train --spec results/tiny/.specs/") and " --out results/tiny/digits/" in train
    spec = json.loads((tiny_run / train.split()[3]).read_text())
    run = tiny_run / train.split()[5]
    assert json.loads((run / "spec.json").read_text()) == spec  # the run keeps the spec it ran


def _finished(results: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in results.glob("digits/*/*/*/seed*/metrics.json")}


def _marked_incomplete(root: Path) -> set[Path]:
    """Outputs Snakemake had not yet recorded as complete (base64 names under .snakemake/incomplete)."""
    import base64

    return {root / base64.b64decode(p.name).decode() for p in (root / ".snakemake" / "incomplete").glob("*")}


def test_killed_dag_finishes_with_rerun_incomplete(tmp_path):
    """SIGKILL the whole DAG once a few runs have finished; the rerun completes them without redoing the
    runs Snakemake had recorded as finished."""
    root = workflow_copy(tmp_path)
    results = root / "results" / "tiny"
    proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile", "configs/tiny.yaml"], cwd=root,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    def recorded() -> dict[Path, int]:
        # a job killed between writing its outputs and Snakemake recording them is still incomplete
        incomplete = _marked_incomplete(root)
        return {p: t for p, t in _finished(results).items() if p not in incomplete}

    deadline = time.time() + 300
    while len(recorded()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = recorded()
    assert 1 <= len(before) < 8, "the DAG must be killed half-way for this test to mean anything"
    # a killed Snakemake leaves its lock behind: the documented recovery is --unlock, then --rerun-incomplete
    assert snakemake(root, "--unlock", "--configfile", "configs/tiny.yaml").returncode == 0
    rerun = snakemake(root, "--cores", "2", "--configfile", "configs/tiny.yaml", "--rerun-incomplete")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _finished(results)
    assert len(after) == 8
    assert all(after[p] == t for p, t in before.items()), "a finished run was redone"
    assert len(pd.read_csv(results / "summary.csv")) == 8


def test_html_report_has_a_caption_for_every_table_and_figure(tiny_run):
    proc = snakemake(tiny_run, "--configfile", "configs/tiny.yaml", "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-2000:]
    html = (tiny_run / "report.html").read_text()
    from qd.report import report_files

    results, figures = tiny_run / "results" / "tiny", tiny_run / "figures" / "tiny"
    shown = {p.stem.split("_", 1)[1] if "_" in p.stem and p.stem != "latency_depth" else p.stem
             for p in report_files(results, figures, ["digits"], True) if p.suffix in (".png", ".md")}
    captions = [tiny_run / "workflow" / "report" / f"{name}.rst" for name in sorted(shown)]
    assert len(captions) >= 8
    for rst in captions:
        if rst.name != "workflow.rst":
            first_words = " ".join(rst.read_text().split()[:5])
            assert first_words in html, f"caption {rst.name} missing from the report"


def test_compressed_file_is_the_reported_model(tiny_run, tmp_path):
    """model.qda: its size is the row's size_on_disk, `qd load` evaluates it to the reported accuracy,
    and `qd export` writes the same bytes again."""
    results = tiny_run / "results" / "tiny"
    run = results / "digits" / "student3" / "qd" / "b2-d256" / "seed0"
    row = json.loads((run / "metrics.json").read_text())
    artefact = run / "model.qda"
    assert row["size_on_disk"] == artefact.stat().st_size
    assert row["size_on_disk"] < row["size_fp32"]
    loaded = qd("load", str(artefact), "--data", str(results / "digits" / "data" / "split.pt"))
    assert loaded.returncode == 0, loaded.stderr
    assert f"test: accuracy {row['accuracy']:.2f}%" in loaded.stdout
    assert f"{row['quantized_params']:,} quantized" in loaded.stdout
    out = tmp_path / "copy.qda"
    assert qd("export", "--run", str(run), "--out", str(out)).returncode == 0
    assert out.read_bytes() == artefact.read_bytes()


def test_latency_columns_and_depth_table(tiny_run):
    results = tiny_run / "results" / "tiny"
    df = pd.read_csv(results / "summary.csv")
    assert (df["latency_median_ms"] > 0).all() and (df["latency_batch"] == 16).all()
    assert (df["latency_repeats"] == 3).all()
    depth = pd.read_csv(results / "tables" / "latency_depth.csv")
    assert list(depth.loc[depth["group"] == "imagenet", "model"]) == ["ResNet-34", "ResNet-18", "2xResNet-18"]
    assert (depth["median_ms"] > 0).all()
    claims = (results / "claims.md").read_text()
    assert "| 2a |" in claims and "| 2b |" in claims


def test_checked_out_depth_timing_is_timed_again(tiny_run, tmp_path):
    # A clone of a committed record holds latency_depth.csv (fresh from the checkout) but none of the
    # untracked .specs/ and .snakemake/: the run must time this machine, not keep the record's numbers.
    clone = tmp_path / "clone"
    shutil.copytree(tiny_run, clone, symlinks=True)
    for untracked in (clone / "results" / "tiny" / ".specs", clone / ".snakemake"):
        shutil.rmtree(untracked)
    (clone / "results" / "tiny" / "latency_depth.csv").touch()
    assert ("latency_depth", "results/tiny/latency_depth.csv") in _planned_jobs(clone, {})
    # in the finished run it is up to date, and a change of its settings times it again
    assert "latency_depth" not in {rule for rule, _ in _planned_jobs(tiny_run, {})}
    changed = _planned_jobs(tiny_run, {"evaluation": {"depth_latency": {"repeats": 4}}})
    assert ("latency_depth", "results/tiny/latency_depth.csv") in changed
