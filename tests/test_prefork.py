"""The warm-start server: a delegated ``qd`` command prints, writes and exits exactly as it does in its
own process, dies with its caller, and the server ends with the process that started it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, env

TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("prefork") / "qd.sock")
    parent = subprocess.Popen(["sleep", "600"])
    proc = subprocess.Popen([sys.executable, "-m", "qd.prefork", "serve", path, "--parent", str(parent.pid)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    yield path, proc, parent
    parent.kill()
    proc.wait(timeout=30)  # parent is a zombie until reaped: the server must not wait for that


def _qd(args, prefork=None, **kw):
    e = env()
    e.pop("QD_PREFORK", None)
    if prefork:
        e["QD_PREFORK"] = prefork
    return subprocess.run([str(BIN / "qd"), *args], cwd=ROOT, env=e, capture_output=True, text=True, **kw)


def test_delegated_command_prints_and_exits_as_in_its_own_process(server):
    path, proc, _ = server
    own = _qd(["plan", "--config", str(TINY)])
    warm = _qd(["plan", "--config", str(TINY)], prefork=path)
    assert own.returncode == warm.returncode == 0
    assert warm.stdout == own.stdout and "digits/teacher/fp/fp32/seed0" in warm.stdout
    bad_own = _qd(["train", "--spec", "/nonexistent/spec.json"])
    bad_warm = _qd(["train", "--spec", "/nonexistent/spec.json"], prefork=path)
    assert bad_own.returncode == bad_warm.returncode == 1
    assert bad_warm.stderr == bad_own.stderr == "qd: spec file /nonexistent/spec.json does not exist\n"
    usage = _qd(["train"], prefork=path)  # argparse's exit status 2 comes back too
    assert usage.returncode == 2 and "qd train needs --config" in usage.stderr
    assert proc.poll() is None  # the server itself keeps serving


def test_delegated_job_writes_the_same_files(server, tmp_path):
    path, _, _ = server
    for name, prefork in (("own", None), ("warm", path)):
        out = tmp_path / name / "digits" / "data" / "manifest.json"
        r = _qd(["data", "--config", str(TINY), "--task", "digits", "--out", str(out)], prefork=prefork)
        assert r.returncode == 0, r.stderr
    a, b = (tmp_path / n / "digits" / "data" / "split.pt" for n in ("own", "warm"))
    assert a.read_bytes() == b.read_bytes()


def test_killing_the_command_kills_its_job(server, tmp_path):
    path, proc, _ = server
    e = env()
    e["QD_PREFORK"] = path
    # a teacher run of many epochs: long enough to be killed mid-way
    args = [str(BIN / "qd"), "train", "--config", str(TINY), "--model", "teacher", "--method", "fp",
            "--results", str(tmp_path)]
    client = subprocess.Popen(args, cwd=ROOT, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not _children(proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    jobs = _children(proc.pid)
    assert jobs, "the server forked no job"
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.time() + 10
    while any(_alive(j) for j in jobs) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(j) for j in jobs)
    assert not (tmp_path / "digits" / "teacher" / "fp" / "fp32" / "seed0" / "metrics.json").exists()


def test_without_a_server_the_command_runs_in_its_own_process(tmp_path):
    r = _qd(["plan", "--config", str(TINY)], prefork=str(tmp_path / "nobody.sock"))
    assert r.returncode == 0 and "digits/teacher/fp/fp32/seed0" in r.stdout


def test_the_server_ends_with_its_parent(tmp_path):
    path = str(tmp_path / "qd.sock")
    parent = subprocess.Popen(["sleep", "600"])
    proc = subprocess.Popen([sys.executable, "-m", "qd.prefork", "serve", path, "--parent", str(parent.pid)],
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    parent.kill()
    parent.wait()
    assert proc.wait(timeout=30) == 0
    assert not os.path.exists(path)
