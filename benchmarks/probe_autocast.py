"""bf16 autocast against fp32 on the real CIFAR-10 images: accuracy and time of the same student run.

The issue that added ``train.autocast`` asks for its effect on accuracy before a preset turns it on.
This trains one run of a preset (default: ``cifar10-converged``'s full-precision student3) twice,
with ``train.autocast: "off"`` and ``"bf16"``, for a few epochs (the cosine schedule compressed into
them), as two single-thread processes side by side, and prints their per-epoch test accuracy and
epoch times. Run from the repository root (about 20 minutes on 2 CPU cores at 12 epochs)::

    .venv/bin/python benchmarks/probe_autocast.py --root /path/to/data --epochs 12
    .venv/bin/python benchmarks/probe_autocast.py --root /path/to/data --epochs 12 --record

``--root`` is the folder holding the CIFAR-10 copy (as ``tasks.cifar10.dataset.root``). The runs are
the project's own (``qd data``, ``qd train --spec``); nothing but the two keys differs between them.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from qd.config import RunId, data_spec, load_config, run_spec

MODES = ("off", "bf16")


def spec_for(preset: Path, task: str, model: str, method: str, root: str, epochs: int, mode: str) -> dict:
    """The run's spec as the workflow writes it, with the epochs shortened and autocast set."""
    overrides = {"tasks": {task: {"dataset": {"root": root}, "train": {"epochs": epochs, "autocast": mode}}}}
    cfg = load_config(preset, overrides)
    return run_spec(cfg, RunId(task, model, method, "fp32", cfg["seeds"][0]))


def prepare(preset: Path, task: str, root: str, folder: Path) -> Path:
    cfg = load_config(preset, {"tasks": {task: {"dataset": {"root": root}}}})
    subprocess.run(["qd", "data", "--spec", json.dumps(data_spec(cfg, task)), "--out", str(folder)], check=True)
    return folder


def train_side_by_side(specs: dict[str, dict], data: Path, work: Path) -> dict[str, Path]:
    jobs, outs = {}, {}
    for mode, spec in specs.items():
        outs[mode] = work / mode
        (work / f"{mode}.json").write_text(json.dumps(spec))
        jobs[mode] = subprocess.Popen(["qd", "train", "--spec", str(work / f"{mode}.json"), "--out",
                                       str(outs[mode]), "--data", str(data)])
    for mode, job in jobs.items():
        if job.wait() != 0:
            sys.exit(f"the {mode} run failed (exit {job.returncode}); its log is under {outs[mode]}")
    return outs


def curves(outs: dict[str, Path]) -> pd.DataFrame:
    frames = []
    for mode, out in outs.items():
        h = pd.read_csv(out / "history.csv")
        frames.append(h.assign(autocast=mode))
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="config/presets/cifar10-converged.yaml")
    ap.add_argument("--task", default="cifar10")
    ap.add_argument("--model", default="student3")
    ap.add_argument("--method", default="fp")
    ap.add_argument("--root", required=True, help="the dataset root (tasks.<task>.dataset.root)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/autocast.json")
    args = ap.parse_args(argv)
    preset = Path(args.preset)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = prepare(preset, args.task, args.root, work / "data")
        specs = {m: spec_for(preset, args.task, args.model, args.method, args.root, args.epochs, m) for m in MODES}
        h = curves(train_side_by_side(specs, data, work))
    acc = h.pivot(index="epoch", columns="autocast", values="test_accuracy")
    secs = h.pivot(index="epoch", columns="autocast", values="seconds")
    table = pd.DataFrame({"fp32 acc": acc["off"], "bf16 acc": acc["bf16"], "fp32 s": secs["off"],
                          "bf16 s": secs["bf16"]})
    print(table.round(2).to_string())
    last = acc.index.max()
    diff = float(acc.loc[last, "bf16"] - acc.loc[last, "off"])
    ratio = float(secs["bf16"].median() / secs["off"].median())
    print(f"after {last} epochs: bf16 - fp32 = {diff:+.2f} points; bf16 epoch / fp32 epoch = {ratio:.2f}x")
    if args.record:
        from qd.report.benchmark import save_benchmark

        rows = [{"what": f"{args.model} {args.method} test accuracy after {last} epochs, fp32", "unit": "%",
                 "value": float(acc.loc[last, "off"]), "digits": 2},
                {"what": f"{args.model} {args.method} test accuracy after {last} epochs, bf16", "unit": "%",
                 "value": float(acc.loc[last, "bf16"]), "digits": 2},
                {"what": "bf16 - fp32 accuracy", "unit": "points", "value": diff, "digits": 2},
                {"what": "bf16 epoch / fp32 epoch (median, side by side)", "unit": "x", "value": ratio, "digits": 2}]
        save_benchmark("autocast", __file__, argv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
