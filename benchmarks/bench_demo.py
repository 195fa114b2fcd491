"""Wall time of the embedded demo, ``snakemake --cores 2`` on the default config (design budget: 5 min).

The demo writes results/ and figures/, so it runs in a temporary copy of the working tree (the files
git tracks plus untracked ones it does not ignore) and leaves this checkout untouched. It takes
minutes, so it only runs when asked::

    .venv/bin/python benchmarks/bench_demo.py            # prints what it would do
    .venv/bin/python benchmarks/bench_demo.py --run      # runs it and prints the wall time
    .venv/bin/python benchmarks/bench_demo.py --run --cores 4 --keep
"""
from __future__ import annotations

import argparse
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


def run_demo(cores: int, keep: bool) -> float:
    bin_dir = Path(sys.executable).parent  # the venv's snakemake and qd entry points
    snakemake = bin_dir / "snakemake"
    if not snakemake.exists():
        raise SystemExit(f"{snakemake} not found: install the project first (make install)")
    work = Path(tempfile.mkdtemp(prefix="qd-demo-"))
    try:
        copy_tree(ROOT, work)
        env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        start = time.perf_counter()
        subprocess.run([str(snakemake), "--cores", str(cores)], cwd=work, env=env, check=True)
        return time.perf_counter() - start
    finally:
        if keep:
            print(f"kept the run in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="store_true", help="run the demo (minutes)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy and its results")
    args = ap.parse_args(argv)
    if not args.run:
        print(f"would copy {len(working_tree_files(ROOT))} files of {ROOT} to a temporary folder and time\n"
              f"  snakemake --cores {args.cores}\nthere (budget {BUDGET_S} s on a 2-core CPU). "
              f"Add --run to do it.")
        return
    wall = run_demo(args.cores, args.keep)
    print(f"demo: snakemake --cores {args.cores}: {wall:.0f} s wall ({wall / BUDGET_S:.2f} x the {BUDGET_S} s budget)")


if __name__ == "__main__":
    main()
