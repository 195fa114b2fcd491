"""The workflow on SLURM, end to end: a one-node cluster on this machine, the SLURM profile unchanged,
the tiny config (tests/configs/slurm-tiny.yaml). About 1.5-2 minutes; it installs slurm-wlm and munge
with apt on first use (scripts/slurm/start_local_slurm.sh) and stops the daemons it started.

    sudo .venv/bin/pytest tests/test_slurm.py -q      # as root, with snakemake-executor-plugin-slurm
    QD_SKIP_SLURM=1 .venv/bin/pytest -q               # the rest of the suite without it

Skips when not root, when apt-get is missing, or with QD_SKIP_SLURM=1. The run happens in a temporary
working directory (``snakemake -s <repo>/Snakefile --directory <tmp>``), so the checkout stays clean;
SLURM jobs run as root on this machine and see the same files and the submitting PATH (sbatch
--export=ALL), which holds this venv's ``qd``.
"""
import csv
import fcntl
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qd.config import load_config, planned_runs

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "slurm"
CONFIG = REPO / "tests" / "configs" / "slurm-tiny.yaml"
PROFILE = REPO / "workflow" / "profiles" / "slurm"
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 600  # the tiny DAG takes ~1.5 min; SIGINT (not TERM) stops a hung Snakemake


def _skip_reason() -> str | None:
    if os.environ.get("QD_SKIP_SLURM") == "1":
        return "QD_SKIP_SLURM=1"
    if os.geteuid() != 0:
        return "needs root: starts a local SLURM (apt install slurm-wlm munge, then the daemons)"
    if shutil.which("apt-get") is None:
        return "needs apt-get to install slurm-wlm and munge (Debian/Ubuntu)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _alive(pidfile: str) -> bool:
    try:
        os.kill(int(Path(pidfile).read_text().split()[0]), 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


@pytest.fixture(scope="module")
def local_slurm():
    """A running one-node SLURM; stopped afterwards unless it was already running before the test."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail(f"snakemake-executor-plugin-slurm is not installed in {sys.prefix}: "
                    f"{BIN / 'pip'} install snakemake-executor-plugin-slurm==2.8.0 (or QD_SKIP_SLURM=1)")
    # one SLURM test at a time on this machine: a second session must not restart or stop our daemons
    with open(Path("/tmp") / "qd-slurm-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        was_running = _alive("/run/slurmctld.pid") and _alive("/run/slurmd.pid")
        start = time.monotonic()
        up = subprocess.run([str(SCRIPTS / "start_local_slurm.sh")], capture_output=True, text=True, timeout=600)
        setup_s = time.monotonic() - start
        assert up.returncode == 0, f"start_local_slurm.sh failed:\n{up.stdout}\n{up.stderr}"
        print(f"\nlocal SLURM up in {setup_s:.1f} s{' (was running)' if was_running else ''}")
        try:
            yield
        finally:
            if not was_running:
                subprocess.run([str(SCRIPTS / "stop_local_slurm.sh")], timeout=60)


def _slurm_jobs(log: str) -> dict[str, list[str]]:
    """SLURM job ids by rule, from the lines "... submitted with SLURM jobid 5 (log: .../rule_teacher/...)"."""
    jobs: dict[str, list[str]] = {}
    for jobid, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log):
        jobs.setdefault(rule, []).append(jobid)
    return jobs


def _job_field(jobid: str, key: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
    m = re.search(rf"\b{key}=(\S+)", out)
    return m.group(1) if m else ""


def test_tiny_config_runs_through_the_slurm_executor(local_slurm, tmp_path):
    cfg = load_config(CONFIG)
    runs = {r.path for r in planned_runs(cfg)}
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    snakemake = shutil.which("snakemake", path=env["PATH"])
    cmd = ["timeout", "-s", "INT", str(RUN_TIMEOUT_S), snakemake, "-s", str(REPO / "Snakefile"),
           "--executor", "slurm", "--workflow-profile", str(PROFILE),
           "--configfile", str(CONFIG), "--directory", str(tmp_path)]
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 60)
    run_s = time.monotonic() - start
    log = done.stdout + done.stderr
    print(f"snakemake --executor slurm: rc {done.returncode} in {run_s:.1f} s")
    assert done.returncode == 0, f"snakemake failed (rc {done.returncode}; 124 = hung, stopped by timeout):\n{log[-6000:]}"

    # every rule ran as a SLURM job, and the profile's resources reached sbatch
    jobs = _slurm_jobs(log)
    assert {r: len(j) for r, j in jobs.items()} == {"data": 1, "teacher": 1, "student": len(runs) - 1,
                                                   "latency": 1, "latency_depth": 1, "report": 1}
    for rule in ("teacher", "student"):
        for jobid in jobs[rule]:
            assert _job_field(jobid, "Partition") == "gpu"
            assert _job_field(jobid, "TresPerJob") == "gres:gpu:1"
            assert _job_field(jobid, "JobState") == "COMPLETED"
    assert _job_field(jobs["data"][0], "Partition") == "cpu"

    # the report collected one row per planned run, with real accuracies
    summary = tmp_path / "results" / cfg["preset"] / "summary.csv"
    rows = list(csv.DictReader(summary.open()))
    assert {row["run"] for row in rows} == runs and len(rows) == len(runs) == 3
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 100.0, row
    assert {row["method"] for row in rows} == {"fp", "qd"}
    assert [row["bits"] for row in rows if row["method"] == "qd"] == ["2"]
