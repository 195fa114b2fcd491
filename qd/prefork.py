"""A warm start for the workflow's jobs: one process imports torch once and forks every ``qd`` job.

``import torch`` costs about 5 s of CPU per process, more than many of the demo's jobs compute, and
Snakemake starts every job as a fresh process. When Snakemake runs jobs on this machine, the
workflow's ``onstart`` handler starts :func:`serve`: a server on a Unix socket that imports the
suite's heavy modules and then, for each ``qd`` command that connects, forks a child which takes over
the command's standard streams, working directory and environment, runs it and reports its exit
status. The ``qd`` command itself (:func:`delegate`, called by ``qd.launcher``) stays a few
milliseconds of Python: it passes its arguments and its stdin/stdout/stderr to the server and exits
with the child's status.

What a job computes does not change: the child runs the same ``qd.cli.main`` in a process whose only
history is the server's imports (no torch operation ran before the fork, so no thread pool or random
state is inherited). Nothing else changes either:

* a job killed by Snakemake (Ctrl-C, a failed sibling, SIGKILL of the whole run) takes its child
  with it: the child watches the connection and kills itself when the command's end closes;
* the server exits when the Snakemake process that started it is gone, or when told to stop;
* without the server (``QD_PREFORK`` unset, a cluster executor, any failure to connect before a
  child started) the command runs in its own process, as it always did.

Try: ``QD_PREFORK=/tmp/qd.sock python -m qd.prefork serve /tmp/qd.sock &`` then time
``QD_PREFORK=/tmp/qd.sock qd plan --config config/config.yaml``.
"""
from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time

ENV = "QD_PREFORK"
PRELOAD = ("torch", "qd.cli", "qd.run", "qd.methods.baselines", "qd.methods.post_mortem",
           "qd.methods.quantized_distillation", "qd.methods.differentiable_quantization",
           "qd.tasks.classification")
_LEN = struct.Struct("<I")
_STARTED, _EXIT = b"S", b"E"


# ------------------------------------------------------------------------------------------- client


def _send_message(sock: socket.socket, payload: dict, fds: list[int] = ()) -> None:
    data = json.dumps(payload).encode()
    sock.sendmsg([_LEN.pack(len(data)), data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                 if fds else [])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return buf
        buf += chunk
    return buf


def delegate(argv: list[str]) -> int | None:
    """Run ``qd argv`` in a child of the server named by ``$QD_PREFORK``; its exit status, or
    ``None`` when no child was started (the caller then runs the command itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        _send_message(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
        if _recv_exact(sock, 1) != _STARTED:
            return None  # the server went away before forking: nothing ran
    except OSError:
        return None
    # from here on the command is running elsewhere: never fall back to running it twice
    status = _recv_exact(sock, 1 + 4)
    if len(status) < 5 or status[:1] != _EXIT:
        print("qd: the job's process ended without an exit status (killed?)", file=sys.stderr)
        return 1
    return struct.unpack("<i", status[1:])[0]


# ------------------------------------------------------------------------------------------- server


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    # the descriptors travel with the message's first bytes: the first read must be a recvmsg
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(1 << 16, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    while len(data) < _LEN.size:
        chunk = conn.recv(_LEN.size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    (n,) = _LEN.unpack(data[: _LEN.size])
    body = data[_LEN.size:]
    body += _recv_exact(conn, n - len(body))
    return json.loads(body), list(fds)


def _watch_client(conn: socket.socket) -> None:
    """In the child: die with the command. The command's end never writes after its request, so
    a readable connection means it closed (the job was killed)."""
    select.select([conn], [], [])
    os.kill(os.getpid(), signal.SIGKILL)


def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the child's own subprocesses start from scratch
    threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
    sys.argv = ["qd", *request["argv"]]
    rc = 1
    try:
        from qd.cli import main

        rc = main(request["argv"])
    except SystemExit as e:  # argparse errors and explicit exits
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the traceback goes to the job's log, as in its own process
        import traceback

        traceback.print_exc()
        rc = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            conn.sendall(_EXIT + struct.pack("<i", int(rc)))
        except OSError:
            pass
        os._exit(int(rc) & 0xFF)


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` still runs; a zombie (dead, not yet reaped by its own parent) counts as gone."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:  # state is the field after the parenthesised name
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 is all there is


def serve(path: str, parent: int | None = None, preload: tuple[str, ...] = PRELOAD) -> None:
    """Listen on ``path``, fork a child per request, and exit when ``parent`` is gone."""
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # only this user may connect
    try:
        server.bind(path)
    finally:
        os.umask(old)
    server.listen(64)  # bound before the imports: early jobs wait in the queue instead of importing torch
    import importlib

    for module in preload:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - a child imports what it needs anyway
            print(f"qd prefork: could not preload {module}: {e}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.settimeout(1.0)
    try:
        while _alive(parent):
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            _fork_job(server, conn)
    finally:
        server.close()
        if os.path.exists(path):
            os.unlink(path)


def _fork_job(server: socket.socket, conn: socket.socket) -> None:
    conn.settimeout(None)
    try:
        request, fds = _recv_request(conn)
    except (EOFError, OSError, ValueError):
        conn.close()
        return
    if request.get("stop"):
        conn.close()
        raise SystemExit(0)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        server.close()
        conn.sendall(_STARTED)
        _run_child(conn, request, fds)
    for fd in fds:
        os.close(fd)
    conn.close()


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def stop(path: str) -> None:
    """Ask the server on ``path`` to exit (running children finish on their own)."""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        _send_message(sock, {"stop": True})
        sock.close()
    except OSError:
        pass


def start(path: str, parent: int, preload: tuple[str, ...] = ()) -> None:
    """Start :func:`serve` as a detached process of the current Python (what the workflow calls)."""
    import subprocess

    args = [sys.executable, "-m", "qd.prefork", "serve", path, "--parent", str(parent)]
    args += [f"--preload={m}" for m in preload]
    subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)
    deadline = time.time() + 10
    while not os.path.exists(path) and time.time() < deadline:  # bound within a second: before torch
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m qd.prefork", description="the workflow's warm-start server")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("path")
    s.add_argument("--parent", type=int)
    s.add_argument("--preload", action="append", default=[])
    t = sub.add_parser("stop")
    t.add_argument("path")
    args = p.parse_args(argv)
    if args.command == "serve":
        serve(args.path, args.parent, PRELOAD + tuple(args.preload))
    else:
        stop(args.path)


if __name__ == "__main__":
    main()
