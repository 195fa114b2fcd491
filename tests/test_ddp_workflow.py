"""Several processes per training job: a tiny image-folder config through the workflow with every
training job under torchrun (2 CPU processes, gloo), and a job whose rank is killed mid-way, which
fails cleanly and resumes from its checkpoint on the rerun, ending like an uninterrupted job."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import BIN, ROOT, env, snakemake, workflow_copy
from qd.config import load_config, planned_runs, run_spec

CLASSES = ("n01", "n02", "n03")


def image_tree(root: Path, train=6, val=2, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for i, c in enumerate(CLASSES):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                # a class-coloured image plus noise, so that a few steps can learn something
                img = rng.integers(0, 80, (60, 60, 3)) + np.eye(3, dtype=int)[i] * 150
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{c}_{k}.png")
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "imagefolder-tiny.yaml").read_text())
    cfg["tasks"]["images"]["dataset"]["root"] = str(image_tree(root / "images"))
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_workflow_runs_every_training_job_under_torchrun(config, tmp_path):
    work = workflow_copy(tmp_path)
    proc = snakemake(work, "--cores", "2", "--configfile", str(config), "--printshellcmds",
                     "results/imagefolder-tiny/latency.csv", timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count("torchrun --standalone --nproc-per-node 2 -m qd.cli train --spec") == 2  # teacher, student
    for run in planned_runs(load_config(config)):
        folder = work / "results" / "imagefolder-tiny" / run.path
        row = json.loads((folder / "metrics.json").read_text())
        assert row["n_test"] == 6 and 0 <= row["accuracy"] <= 100
        history = (folder / "history.csv").read_text().splitlines()
        assert len(history) == 3  # header and two epochs, written once (by rank 0)
        # each rank took its half of every global batch of 6: 18 images -> 3 steps, on 2 processes
        assert (folder / "log.txt").read_text().count("epoch 2/2") == 1


def _torchrun(spec_file: Path, out: Path, data: Path, teacher: Path) -> list[str]:
    return [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "qd.cli", "train",
            "--spec", str(spec_file), "--out", str(out), "--data", str(data), "--teacher", str(teacher)]


def _rank_pids(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_rank_fails_the_job_and_the_rerun_resumes(config, tmp_path):
    """Uninterrupted vs killed-and-rerun: the same metrics and weights."""
    work = workflow_copy(tmp_path)
    teacher_target = "results/imagefolder-tiny/images/resnet34/fp/fp32/seed0/metrics.json"
    assert snakemake(work, teacher_target, "--cores", "2", "--configfile", str(config), timeout=900).returncode == 0
    cfg = load_config(config)
    run = next(r for r in planned_runs(cfg) if r.method == "qd")
    spec = run_spec(cfg, run)
    spec["train"]["epochs"] = 6
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    results = work / "results" / "imagefolder-tiny"
    data, teacher = results / "images" / "data", results / "images" / "resnet34" / "fp" / "fp32" / "seed0"
    e = env()
    clean = subprocess.run(_torchrun(spec_file, tmp_path / "clean", data, teacher), env=e, capture_output=True,
                           text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    killed = tmp_path / "killed"
    job = subprocess.Popen(_torchrun(spec_file, killed, data, teacher), env=e, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (killed / "checkpoint.pt").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    ranks = _rank_pids(job.pid)
    assert len(ranks) == 2, "torchrun should run two processes"
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies mid-training
    _, err = job.communicate(timeout=300)
    assert job.returncode != 0, "a dead rank must fail the whole job"
    assert not (killed / "metrics.json").exists()
    rerun = subprocess.run(_torchrun(spec_file, killed, data, teacher), env=e, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {killed / 'checkpoint.pt'} after epoch" in rerun.stderr
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "clean", killed))
    for key in ("accuracy", "top5", "test_loss", "size_on_disk", "huffman_bits_per_weight"):
        assert a[key] == b[key], key
    assert (tmp_path / "clean" / "model.qda").read_bytes() == (killed / "model.qda").read_bytes()
