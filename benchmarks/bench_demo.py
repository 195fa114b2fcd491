"""Wall time of the embedded demo, ``snakemake --cores 2`` on the default config.

Budgets (design): at most 5 minutes on a 2-core CPU once installed, and at most 1.3x (issue: 1.5x)
the sum of its runs' in-process time (``wall_time`` of every result row) divided by the cores: the
rest is process start-up and orchestration, which the warm-start server (qd/prefork.py) exists to
keep small. ``--cold`` runs the same DAG with ``QD_NO_PREFORK=1`` (every job its own Python) for the
comparison.

The demo writes results/ and figures/, so it runs in a temporary copy of the working tree (the files
git tracks plus untracked ones it does not ignore) and leaves this checkout untouched. It takes
minutes, so it only runs when asked::

    .venv/bin/python benchmarks/bench_demo.py            # prints what it would do
    .venv/bin/python benchmarks/bench_demo.py --run      # runs it and prints the figures
    .venv/bin/python benchmarks/bench_demo.py --run --record        # saves benchmarks/results/demo.json
    .venv/bin/python benchmarks/bench_demo.py --run --cold --record # saves benchmarks/results/demo_cold.json

``--record`` saves the wall time and the overhead ratio with their budgets as the record that
``benchmarks/README.md`` is generated from (``qd readme``); run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 300


def working_tree_files(root: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=root, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def copy_tree(root: Path, dest: Path) -> None:
    for name in working_tree_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def run_demo(cores: int, keep: bool, cold: bool = False) -> dict:
    bin_dir = Path(sys.executable).parent  # the venv's snakemake and qd entry points
    snakemake = bin_dir / "snakemake"
    if not snakemake.exists():
        raise SystemExit(f"{snakemake} not found: install the project first (make install)")
    work = Path(tempfile.mkdtemp(prefix="qd-demo-"))
    try:
        copy_tree(ROOT, work)
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        if cold:
            env["QD_NO_PREFORK"] = "1"
        start = time.perf_counter()
        subprocess.run([str(snakemake), "--cores", str(cores)], cwd=work, env=env, check=True)
        wall = time.perf_counter() - start
        rows = [json.loads(p.read_text()) for p in (work / "results" / "demo").glob("*/*/*/*/seed*/metrics.json")]
        in_process = sum(r["wall_time"] for r in rows)
        return {"wall_s": wall, "runs": len(rows), "runs_in_process_s": in_process, "cores": cores,
                "overhead_ratio": wall / (in_process / cores), "warm_start": not cold}
    finally:
        if keep:
            print(f"kept the run in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run the demo (minutes)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="every job in its own Python (QD_NO_PREFORK=1)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy and its results")
    # not under benchmarks/results/: qd readme reads every JSON file there as a record with rows
    ap.add_argument("--json", help="also write the raw figures to this JSON file")
    ap.add_argument("--record", action="store_true",
                    help="save benchmarks/results/demo.json (demo_cold.json with --cold), the README's")
    args = ap.parse_args(argv)
    if args.record and not args.run:
        ap.error("--record needs --run (it records the run's figures)")
    if not args.run:
        print(f"would copy {len(working_tree_files(ROOT))} files of {ROOT} to a temporary folder and time\n"
              f"  snakemake --cores {args.cores}\nthere (budget {BUDGET_S} s on a 2-core CPU). "
              f"Add --run to do it.")
        return
    r = run_demo(args.cores, args.keep, args.cold)
    print(f"demo: snakemake --cores {args.cores} ({'cold' if args.cold else 'warm start'}): {r['wall_s']:.0f} s wall "
          f"({r['wall_s'] / BUDGET_S:.2f} x the {BUDGET_S} s budget); {r['runs']} runs computed for "
          f"{r['runs_in_process_s']:.0f} s in-process, so wall / (in-process / cores) = {r['overhead_ratio']:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    if args.record:
        from qd.report.benchmark import save_benchmark

        mode = "cold" if args.cold else "warm start"
        records = [{"what": f"snakemake --cores {args.cores} on the default config, {r['runs']} runs ({mode})",
                    "value": r["wall_s"], "unit": "s", "budget": BUDGET_S, "better": "lower", "digits": 0},
                   {"what": "wall / (runs' in-process time / cores)", "value": r["overhead_ratio"], "unit": "x",
                    "budget": 1.5, "better": "lower", "digits": 2}]
        save_benchmark('demo_cold' if args.cold else 'demo', __file__, argv, records)


if __name__ == "__main__":
    main()
