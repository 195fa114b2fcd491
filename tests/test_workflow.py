"""End to end: the Snakemake workflow on a tiny config in a temporary folder.

Checks the produced summary (one row per planned run, with the result-row fields), the paper-layout
tables, claims.md, the figures, that a finished DAG has nothing left to do, and that a DAG killed
half-way finishes with --rerun-incomplete without redoing finished runs.
"""
from __future__ import annotations

import json
import os
import re
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
VERDICTS = {"PASS", "FAIL", "INCONCLUSIVE", "NOT COMPARABLE", "NOT TESTED"}
# the tiny preset's uniformly quantized students (DQ's learned points are no even grid): claim 5 runs these
UNIFORM = {f"digits/student3/{m}/seed0" for m in ("pm/b2-d256", "pm/b2-nobucket", "qt/b2-d256", "qd/b2-d256")}


def _interval_verdict(low: float, high: float, threshold: float) -> str:
    """A paired difference against its threshold: PASS when the whole interval clears it, FAIL when all
    of it misses (or it is the threshold itself), INCONCLUSIVE when the threshold lies inside."""
    if low > threshold:
        return "PASS"
    if high < threshold or low == high == threshold:
        return "FAIL"
    return "INCONCLUSIVE"


def _every_cell_must_hold(verdicts) -> str:
    v = list(verdicts)
    return "FAIL" if "FAIL" in v else ("PASS" if all(x == "PASS" for x in v) else "INCONCLUSIVE")


def _claims(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "claims.csv", dtype={"claim": str}).set_index("claim")


def _thresholds(root: Path) -> dict:
    """The report block's defaults (the tiny config sets none)."""
    import yaml

    schema = yaml.safe_load((root / "workflow" / "schemas" / "report.schema.yaml").read_text())
    return {k: v["default"] for k, v in schema["properties"].items() if "default" in v}


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
    # the method's own word on its grid: DQ's learned points are not uniform, the other quantizers' are
    assert q.set_index("method")["uniform_grid"].astype(bool).to_dict() == {"pm": True, "qt": True, "qd": True,
                                                                            "dq": False}


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
    claims = _claims(results)
    # 2a/2b are the preset's (stated once, before the tasks); the rest the task's
    assert list(claims.index) == ["2a", "2b", "1", "2c", "3a", "3b", "3c", "4a", "4b", "5", "6", "7"]
    assert list(claims["task"]) == ["(preset)"] * 2 + ["digits"] * 10 and set(claims["verdict"]) <= VERDICTS
    # timed on a CPU: not comparable with the paper's GPU statement, the measured verdict beside it
    assert set(claims.loc[["2a", "2b"], "verdict"]) == {"NOT COMPARABLE"}
    # digits is not a dataset of the paper: analogues; every decided verdict says what its interval includes
    assert set(claims.loc[["1", "3a", "3b", "4b"], "scope"]) == {"analogue"}
    assert claims.loc["3a", "variances"].startswith("test-set sampling") and "binomial" in claims.loc["3a", "variances"]
    # claims.md shows each claim with the verdict claims.csv records, in its table and its section
    md = (results / "claims.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| .*? \| \*\*([A-Z ]+)\*\*", md, re.MULTILINE))
    assert rows == claims["verdict"].to_dict()
    sections = dict(re.findall(r"^### Claim (\w+): ([A-Z ]+)$", md, re.MULTILINE))
    assert sections and all(claims.loc[n, "verdict"] == v for n, v in sections.items())
    # 2 bits only and no translation task: the 4-bit claims and claim 7 have nothing to test
    for n in ("1", "3c", "4a", "7"):
        assert claims.loc[n, "verdict"] == "NOT TESTED", n
    # the paired claims: the difference of the two runs' accuracies, decided by its interval
    report = _thresholds(tiny_run)

    def accuracy(method, bucket=None):
        run = summary[(summary["model"] == "student3") & (summary["method"] == method)]
        run = run[run["bucket"].isna()] if bucket is None else run[run["bucket"] == bucket]
        assert len(run) == 1
        return run["accuracy"].iloc[0]

    paired = {"3a": ("student3", accuracy("distill") - accuracy("fp"), report["distill_min_gain"]),
              "3b": ("student3 2-bit", accuracy("qd", 256) - accuracy("pm", 256), report["qd_vs_pm_min_gap_2bit"]),
              "4b": ("student3 2-bit", accuracy("qd", 256) - accuracy("dq", 256), report["qd_vs_dq_min_gap_2bit"])}
    for n, (where, difference, threshold) in paired.items():
        c = claims.loc[n]
        assert (c["where"], c["threshold"]) == (where, threshold), n
        assert c["estimate"] == pytest.approx(difference, abs=1e-6), n
        assert c["low"] <= c["estimate"] <= c["high"], n
        assert c["verdict"] == c["measured"] == _interval_verdict(c["low"], c["high"], threshold), n
    # claim 5: every uniformly quantized student run from its integer codes, and only those
    integer = pd.read_csv(results / "tables" / "digits_integer.csv")
    assert set(integer["run"]) == UNIFORM and len(integer) == len(UNIFORM)
    assert set(integer["verdict"]) <= VERDICTS
    assert claims.loc["5", "verdict"] == _every_cell_must_hold(integer["verdict"])
    # claim 6: the PM student's layers at the one bit width the preset runs
    noise = pd.read_csv(results / "tables" / "digits_noise.csv")
    assert len(noise) > 0 and set(noise["model"]) == {"student3"} and set(noise["bits"]) == {2}
    assert claims.loc["6", "verdict"] == _every_cell_must_hold(noise["verdict"])
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
    """Each job's line names its files (spec, output, declared inputs) and carries no configuration."""
    import shlex

    log = sorted((tiny_run / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()
    commands = [line.strip().removeprefix("Shell command: ") for line in log.splitlines()
                if line.strip().removeprefix("Shell command: ").startswith("qd ")]
    assert commands
    for c in commands:
        words = shlex.split(c.split(" > ")[0])  # the redirection into the job's log is the shell's
        assert all(len(w) < 100 and not set(w) & set("{}[]\n") for w in words), c
    trains = [shlex.split(c.split(" > ")[0]) for c in commands if c.startswith("qd train ")]
    assert len(trains) == 8  # one line per run
    for words in trains:
        flags = dict(zip(words[2::2], words[3::2]))
        assert all(f.startswith("--") for f in flags) and len(words) % 2 == 0, words
        assert flags["--spec"].startswith("results/tiny/.specs/") and flags["--out"].startswith("results/tiny/digits/")
        spec = json.loads((tiny_run / flags["--spec"]).read_text())
        run = tiny_run / flags["--out"]
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
    # claim 2 on the timed ResNets: the speed-up and time ratio of the medians, decided over the IQRs
    report = _thresholds(tiny_run)
    claims = _claims(results)
    t = depth[depth["group"] == "imagenet"].set_index("model")
    deep, shallow, wide = (t.loc[m] for m in ("ResNet-34", "ResNet-18", "2xResNet-18"))

    def ratio(num, den) -> tuple[float, float, float]:
        lo = (num["median_ms"] - num["iqr_ms"] / 2) / (den["median_ms"] + den["iqr_ms"] / 2)
        hi = (num["median_ms"] + num["iqr_ms"] / 2) / (den["median_ms"] - den["iqr_ms"] / 2)
        return num["median_ms"] / den["median_ms"], lo, hi

    speedup, lo, hi = ratio(deep, shallow)
    need = report["speedup_fraction_of_depth"] * deep["depth"] / shallow["depth"]
    assert claims.loc["2a", "summary"].startswith(f"speed-up {speedup:.2f} [{lo:.2f}, {hi:.2f}] vs >= {need:.2f}")
    # timed on a CPU: NOT COMPARABLE with the paper's GPU statement, the measured verdict kept beside it
    assert set(depth["device"]) == {"cpu"} and claims.loc["2a", "verdict"] == "NOT COMPARABLE"
    assert claims.loc["2a", "measured"] == ("PASS" if lo >= need else "FAIL" if hi < need else "INCONCLUSIVE")
    slower, lo, hi = ratio(wide, shallow)
    most = report["wide_max_time_ratio"]
    assert claims.loc["2b", "summary"].startswith(f"time ratio {slower:.2f} [{lo:.2f}, {hi:.2f}]")
    assert claims.loc["2b", "verdict"] == "NOT COMPARABLE"
    assert claims.loc["2b", "measured"] == ("PASS" if hi <= most else "FAIL" if lo > most else "INCONCLUSIVE")
    # claim 2c: the one student against the teacher, timed by the timing job
    assert claims.loc["2c", "verdict"] in {"PASS", "FAIL", "INCONCLUSIVE"}
    assert claims.loc["2c", "summary"] == f"{int(claims.loc['2c', 'verdict'] == 'PASS')} of 1 students hold"


def test_checked_out_depth_timing_is_timed_again(tiny_run, tmp_path):
    # A results folder copied from another machine (or a record copied into results/) holds
    # latency_depth.csv but none of the untracked .specs/ and .snakemake/: the run must time this
    # machine, not keep the copied numbers.
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
