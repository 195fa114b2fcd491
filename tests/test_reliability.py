"""Runs that survive: resume after SIGKILL, identical reruns, non-finite losses, clear failures.

Each test runs the real ``qd`` CLI (or ``qd.run.execute``) on the tiny config's digits data.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import BIN, ROOT, env, qd
from qd.artefact import load_artefact
from qd.config import RunId, load_config, run_spec, teacher_run
from qd.data import Normalise, prepare, save_splits
from qd.run import execute

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
TIMING = {"wall_time", "latency_median_ms", "latency_iqr_ms"}  # timings differ between identical runs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Tiny config, its prepared digits split and a trained tiny teacher."""
    root = tmp_path_factory.mktemp("runs")
    cfg = load_config(TINY)
    data = root / "digits" / "data" / "split.pt"
    save_splits(prepare(cfg["tasks"]["digits"]["dataset"]), data)
    teacher = teacher_run(cfg, "digits")
    execute(run_spec(cfg, teacher), root / teacher.path, data)
    return cfg, root, data


def _spec(cfg, method, variant, epochs, **train):
    spec = run_spec(cfg, RunId("digits", "student3", method, variant, 0))
    spec["train"].update(epochs=epochs, **train)
    return spec


def _row(out: Path) -> dict:
    row = json.loads((out / "metrics.json").read_text())
    return {k: v for k, v in row.items() if k not in TIMING}


def _history(out: Path) -> list[str]:
    """history.csv without the per-epoch timing column."""
    lines = (out / "history.csv").read_text().splitlines()
    col = lines[0].split(",").index("seconds")
    return [",".join(v for i, v in enumerate(line.split(",")) if i != col) for line in lines]


def _train_cmd(spec, out, data, root):
    return [str(BIN / "qd"), "train", "--spec", json.dumps(spec), "--data", str(data), "--out", str(out),
            "--teacher", str(root / "digits" / "teacher" / "fp" / "fp32" / "seed0")]


def _state(out: Path) -> dict:
    return load_artefact(out / "model.qda")[0]


def test_same_seed_gives_identical_results(prepared):
    cfg, root, data = prepared
    spec = _spec(cfg, "qd", "b2-d256", epochs=2)
    execute(spec, root / "a", data, root / "digits/teacher/fp/fp32/seed0")
    execute(spec, root / "b", data, root / "digits/teacher/fp/fp32/seed0")
    assert _row(root / "a") == _row(root / "b")
    assert _history(root / "a") == _history(root / "b")
    sa, sb = _state(root / "a"), _state(root / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_different_seeds_differ(prepared):
    cfg, root, data = prepared
    spec = _spec(cfg, "fp", "fp32", epochs=1)
    execute(spec, root / "s0", data)
    spec["seed"] = 1
    execute(spec, root / "s1", data)
    assert not torch.equal(_state(root / "s0")["out_layer.weight"], _state(root / "s1")["out_layer.weight"])


def test_sigkill_then_resume_matches_uninterrupted_run(prepared):
    """A QD run killed with SIGKILL mid-training and rerun ends exactly like one never interrupted."""
    cfg, root, data = prepared
    # stochastic rounding and dropout exercise the checkpointed random states as well
    spec = _spec(cfg, "qd", "b2-d256", epochs=10, batch_size=16)
    spec["quant"]["rounding"] = "stochastic"
    spec["model"]["dropout"] = True
    clean, killed = root / "clean", root / "killed"
    assert subprocess.run(_train_cmd(spec, clean, data, root), env=env(), capture_output=True).returncode == 0
    proc = subprocess.Popen(_train_cmd(spec, killed, data, root), env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # land the kill inside a later epoch, between checkpoints
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert ckpt.exists() and not (killed / "metrics.json").exists()
    epoch = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= epoch < 10
    resumed = subprocess.run(_train_cmd(spec, killed, data, root), env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt} after epoch {epoch}" in resumed.stderr
    assert _row(clean) == _row(killed)
    assert _history(clean) == _history(killed)
    sc, sk = _state(clean), _state(killed)
    assert all(torch.equal(sc[k], sk[k]) for k in sc)
    assert not ckpt.exists()


def test_non_finite_loss_stops_with_run_epoch_and_step(prepared, tmp_path):
    cfg, root, data = prepared
    splits = torch.load(data, weights_only=False)
    x, y = splits["train"]
    x = Normalise(splits["meta"])(x)  # stored as floats (a prepared file may hold normalised images) ...
    x[5] = float("nan")  # ... with one poisoned image; batches are shuffled, so it lands at some step of epoch 1
    splits["train"] = (x, y)
    bad = tmp_path / "bad" / "split.pt"
    bad.parent.mkdir()
    torch.save(splits, bad)
    out = tmp_path / "run"
    spec = _spec(cfg, "fp", "fp32", epochs=2)
    proc = qd("train", "--spec", json.dumps(spec), "--data", str(bad), "--out", str(out))
    assert proc.returncode == 1
    msg = proc.stderr.strip().splitlines()[-1]
    assert msg.startswith("qd: run digits/student3/fp/fp32/seed0: loss became nan at epoch 1, step ")
    assert "Traceback" not in proc.stderr
    assert not (out / "metrics.json").exists() and not (out / "model.qda").exists()


def test_missing_teacher_run_is_named(prepared, tmp_path):
    cfg, root, data = prepared
    spec = _spec(cfg, "qd", "b2-d256", epochs=1)
    proc = qd("train", "--spec", json.dumps(spec), "--data", str(data), "--out", str(tmp_path / "o"),
              "--teacher", str(tmp_path / "nowhere"))
    assert proc.returncode == 1
    assert f"{tmp_path / 'nowhere' / 'model.qda'} does not exist" in proc.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()
