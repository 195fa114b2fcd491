"""The warm-start server: a delegated ``qd`` command prints, writes and exits exactly as it does in its
own process, dies with its caller, and the server ends with the process that started it.

The servers here run ``qd.prefork.main`` behind a probe that wraps ``qd.cli.main`` in the server before
it forks: every command a forked child runs appends its pid, parent pid, arguments, working directory
and ``$QD_PREFORK`` to a log. A command that ran in its own process writes nothing there, so each test
can tell a delegated job from a fallback.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BIN, ROOT, env

TINY = ROOT / "tests" / "configs" / "tiny.yaml"
PLAN = ["plan", "--config", str(TINY)]

# python -c PROBE LOG serve PATH --parent PID: the server of `python -m qd.prefork`, logging each job it runs
PROBE = """
import json, os, sys
import qd.cli
from qd.prefork import main

log = sys.argv[1]
run = qd.cli.main


def logged(argv=None):
    with open(log, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid(), "argv": argv, "cwd": os.getcwd(),
                            "prefork": os.environ.get("QD_PREFORK")}) + "\\n")
    return run(argv)


qd.cli.main = logged
main(sys.argv[2:])
"""


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


@dataclass
class Server:
    path: str
    proc: subprocess.Popen
    parent: subprocess.Popen
    log: Path

    def jobs(self) -> list[dict]:
        """Every command a child of this server has run, in order."""
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []


def _start_server(folder: Path) -> Server:
    path, log = str(folder / "qd.sock"), folder / "jobs.jsonl"
    parent = subprocess.Popen(["sleep", "600"])
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(log), "serve", path, "--parent", str(parent.pid)],
                            cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(path), "the server never bound its socket"
    return Server(path, proc, parent, log)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = _start_server(tmp_path_factory.mktemp("prefork"))
    yield s
    s.parent.kill()
    try:
        s.proc.wait(timeout=30)  # parent is a zombie until reaped: the server must not wait for that
    finally:
        if s.proc.poll() is None:
            s.proc.terminate()


def _qd(args, prefork=None, **kw):
    e = env()
    e.pop("QD_PREFORK", None)
    if prefork:
        e["QD_PREFORK"] = prefork
    return subprocess.run([str(BIN / "qd"), *args], cwd=ROOT, env=e, capture_output=True, text=True, **kw)


def _ran_in_children_of(server: Server, jobs: list[dict], argvs: list[list[str]]) -> None:
    """``jobs`` are exactly ``argvs``, each run once in its own fresh child of the server, in the caller's
    folder, with ``$QD_PREFORK`` dropped for the job's own subprocesses."""
    assert [j["argv"] for j in jobs] == argvs
    assert {j["ppid"] for j in jobs} == {server.proc.pid}
    assert len({j["pid"] for j in jobs}) == len(jobs) and server.proc.pid not in {j["pid"] for j in jobs}
    assert all(j["cwd"] == str(ROOT) and j["prefork"] is None for j in jobs)


def test_delegated_command_prints_and_exits_as_in_its_own_process(server):
    before = len(server.jobs())
    own = _qd(PLAN)
    warm = _qd(PLAN, prefork=server.path)
    assert own.returncode == warm.returncode == 0
    assert warm.stdout == own.stdout and "digits/teacher/fp/fp32/seed0" in warm.stdout
    bad_own = _qd(["train", "--spec", "/nonexistent/spec.json"])
    bad_warm = _qd(["train", "--spec", "/nonexistent/spec.json"], prefork=server.path)
    assert bad_own.returncode == bad_warm.returncode == 1
    assert bad_warm.stderr == bad_own.stderr == "qd: spec file /nonexistent/spec.json does not exist\n"
    usage = _qd(["train"], prefork=server.path)  # argparse's exit status 2 comes back too
    assert usage.returncode == 2 and "qd train needs --config" in usage.stderr
    # the three warm commands ran in the server's children, the two without $QD_PREFORK did not
    _ran_in_children_of(server, server.jobs()[before:],
                        [PLAN, ["train", "--spec", "/nonexistent/spec.json"], ["train"]])
    assert server.proc.poll() is None  # the server itself keeps serving


def test_delegated_job_writes_the_same_files(server, tmp_path):
    before = len(server.jobs())
    argvs = {}
    for name, prefork in (("own", None), ("warm", server.path)):
        out = tmp_path / name / "digits" / "data" / "manifest.json"
        argvs[name] = ["data", "--config", str(TINY), "--task", "digits", "--out", str(out)]
        r = _qd(argvs[name], prefork=prefork)
        assert r.returncode == 0, r.stderr
    _ran_in_children_of(server, server.jobs()[before:], [argvs["warm"]])
    a, b = (tmp_path / n / "digits" / "data" / "split.pt" for n in ("own", "warm"))
    assert a.read_bytes() == b.read_bytes()


def test_killing_the_command_kills_its_job(server, tmp_path):
    import yaml

    # a teacher run of many epochs on prepared data: still training when its command is killed
    cfg = yaml.safe_load(TINY.read_text())
    cfg["tasks"]["digits"]["train"]["epochs"] = 500
    long = tmp_path / "long.yaml"
    long.write_text(yaml.safe_dump(cfg))
    prepared = _qd(["data", "--config", str(long), "--task", "digits",
                    "--out", str(tmp_path / "digits" / "data" / "manifest.json")])
    assert prepared.returncode == 0, prepared.stderr
    before = len(server.jobs())
    e = env()
    e["QD_PREFORK"] = server.path
    argv = ["train", "--config", str(long), "--model", "teacher", "--method", "fp", "--results", str(tmp_path)]
    client = subprocess.Popen([str(BIN / "qd"), *argv], cwd=ROOT, env=e, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while len(server.jobs()) == before and time.time() < deadline:
        time.sleep(0.05)
    started = server.jobs()[before:]
    _ran_in_children_of(server, started, [argv])
    job = started[0]["pid"]
    try:
        time.sleep(2)  # past any early failure: the job is training
        assert client.poll() is None and _alive(job) and job in _children(server.proc.pid), client.stderr.read()
        client.send_signal(signal.SIGKILL)
        client.wait()
        deadline = time.time() + 10
        while _alive(job) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(job), "the job outlived the command that started it"
    finally:
        if _alive(job):
            os.kill(job, signal.SIGKILL)
    assert not (tmp_path / "digits" / "teacher" / "fp" / "fp32" / "seed0" / "metrics.json").exists()


def _hangs_up_before_forking(path: Path) -> threading.Thread:
    """A server that reads one request and closes the connection without starting a child."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve_once():
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.close()
        listener.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    return thread


def test_without_a_server_the_command_runs_in_its_own_process(server, tmp_path):
    before = len(server.jobs())
    own = _qd(PLAN)
    assert own.returncode == 0 and "digits/teacher/fp/fp32/seed0" in own.stdout
    missing = tmp_path / "nobody.sock"
    stale = tmp_path / "dead.sock"  # the socket file of a server killed before it could remove it
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(stale))
    dead.close()
    gone = tmp_path / "gone.sock"
    hung_up = _hangs_up_before_forking(gone)
    for path in (missing, stale, gone):
        r = _qd(PLAN, prefork=str(path))
        # it ran here, once: the same output as without $QD_PREFORK, not twice, not empty
        assert (r.returncode, r.stdout, r.stderr) == (0, own.stdout, own.stderr), path.name
    hung_up.join(timeout=10)
    assert not hung_up.is_alive(), "the command never asked the hanging-up server"
    assert server.jobs()[before:] == []  # and no server's child ran it


def test_the_server_ends_with_its_parent(tmp_path):
    s = _start_server(tmp_path)
    try:
        r = _qd(PLAN, prefork=s.path)
        assert r.returncode == 0
        _ran_in_children_of(s, s.jobs(), [PLAN])  # it was serving until its parent went
        assert s.proc.poll() is None
        s.parent.kill()
        s.parent.wait()
        assert s.proc.wait(timeout=30) == 0
        assert not os.path.exists(s.path)
    finally:
        s.parent.kill()
        if s.proc.poll() is None:
            s.proc.terminate()
            s.proc.wait(timeout=30)
