"""Benchmark records: what a benchmark script's ``--record`` saves under ``benchmarks/results/`` (its
name, the command that reproduces it, the commit, the machine, the date and the load, and its rows of
measured ratios against their budgets), which the README's benchmark sections are generated from
(``qd.report.readme``). ``scripts/run_record.py`` names the machine the same way.

Try: ``pytest tests/test_readme.py -k benchmark``.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import date
from pathlib import Path

BENCHMARK_RESULTS = Path("benchmarks") / "results"


def _git_describe(root: Path) -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """The machine in words: CPU architecture and name where the OS says it, and the core count."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores"


def benchmark_record(benchmark: str, command: str, rows: list[dict], root: Path | None = None) -> dict:
    """What a benchmark saves: its name, the command that reproduces it, the commit and machine, the
    date, and rows ``{"what", "value", "unit", "budget", "better": "lower"|"higher", "digits"}``."""
    root = Path(root or Path(__file__).resolve().parents[2])
    for r in rows:
        missing = {"what", "value"} - set(r)
        if missing:
            raise ValueError(f"benchmark {benchmark}: row {r} lacks {sorted(missing)}")
    # the 1-minute load average when the record is written: a ratio taken beside other jobs is not one
    # taken on an idle machine, and the reader should see which it is
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {"benchmark": benchmark, "command": command, "code_version": _git_describe(root), "machine": machine(),
            "date": date.today().isoformat(), "load_average": load, "rows": rows}


def write_benchmark_record(benchmark: str, command: str, rows: list[dict], root: Path | None = None) -> Path:
    """Save ``benchmarks/results/<benchmark>.json`` (the README's benchmark sections read it)."""
    from qd.io import atomic_write_text

    root = Path(root or Path(__file__).resolve().parents[2])
    path = root / BENCHMARK_RESULTS / f"{benchmark}.json"
    atomic_write_text(json.dumps(benchmark_record(benchmark, command, rows, root), indent=1) + "\n", path)
    return path


def save_benchmark(benchmark: str, script: str, argv: list[str] | None, rows: list[dict],
                   root: Path | None = None) -> Path:
    """What a benchmark script's ``--record`` does: the command that reproduces this run (the script under
    ``benchmarks/`` with this run's arguments) and ``rows`` saved as the record; prints where."""
    args = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", f"benchmarks/{Path(script).name}", *args])
    path = write_benchmark_record(benchmark, command, rows, root)
    print(f"record: {path}")
    return path
