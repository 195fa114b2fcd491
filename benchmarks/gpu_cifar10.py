"""The ``cifar10`` preset on one GPU in a few minutes: epoch times and accuracies of its teacher and
student 3 trained with ``fp``, ``qd`` and ``dq``, and the GPU rows of ``config/epoch_times.csv`` that
``qd plan`` reads. Run from the repository root::

    .venv/bin/python benchmarks/gpu_cifar10.py                        # one GPU, under 8 min; writes the rows
    .venv/bin/python benchmarks/gpu_cifar10.py --root /path/to/data   # the real images (else generated ones)
    .venv/bin/python benchmarks/gpu_cifar10.py --device cpu --quick   # the same code on a CPU, 1-2 min; no row

Every run goes through the project's own path: the preset's config (``qd.config.load_config``), its
run specs (``run_spec``) with only the epochs cut (``--epochs``, one stage: the preset trains its
students twice in a row), the dataset's own builder (``Classification.prepare``, as ``qd data``
does) and ``qd.run.execute``, which writes each run folder as the workflow would. Without ``--root``
the images are generated in the official release's format (50,000 + 10,000 uint8 images of 3x32x32,
10 classes) in place of reading its files: each class a fixed random pattern plus noise, so the
accuracies show that the runs learn, not what CIFAR-10 gives.

The table rows (model, ``cifar10``, ``--label``, the preset's batch 25, images per epoch, seconds)
are the ``fp`` runs' last epoch (the first pays cuDNN's autotuning and the allocator's warm-up) less
the per-epoch evaluation of the test set, timed apart, since ``qd.cost`` adds evaluation itself. A
row of the same model, dataset and device is replaced; others are kept. ``qd`` and ``dq`` epochs are
printed as ratios to student 3's ``fp`` epoch (``qd.cost`` counts them from the rows). With
``--device cpu`` or ``--quick`` nothing is written unless ``--table`` names a file.

The speed switches (``--channels-last``, ``--compile``, ``--autocast bf16``) go into every run's
recipe; the rows' ``source`` says which were on.
"""
from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "config" / "presets" / "cifar10.yaml"
TABLE = ROOT / "config" / "epoch_times.csv"
TASK = "cifar10"
STUDENT = "student3"
QUANTIZED = "b4-d256"  # any bit width costs the same; 4 bits is a cell of Table A for both methods
SIZES = {"full": (50_000, 10_000), "quick": (500, 200)}  # (training, test) images


def generated_release(n_train: int, n_test: int, seed: int = 0):
    """What ``qd.data.cifar.load_cifar10`` returns, generated: ``(train, test, source)``, each split
    ``(uint8 images (N, 3, 32, 32), int64 labels)``; class ``c`` is pattern ``c`` plus noise."""
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 3, 32, 32, generator=gen) * 255

    def split(n: int):
        y = torch.randint(0, 10, (n,), generator=gen)
        x = 0.5 * patterns[y] + torch.rand(n, 3, 32, 32, generator=gen) * 127
        return x.round().clamp(0, 255).to(torch.uint8), y

    return split(n_train), split(n_test), f"generated ({n_train} + {n_test} images, seed {seed})"


def prepare_data(cfg: dict, folder: Path, generated: tuple | None) -> dict:
    """The task's prepared data in ``folder`` through the dataset's own builder (``qd data``'s path);
    ``generated`` stands in for the files of the official release when given."""
    import qd.data.cifar
    from qd.config import data_spec
    from qd.tasks import load_task

    spec = data_spec(cfg, TASK)
    prepare = load_task(cfg["tasks"][TASK]["kind"]).prepare
    if generated is None:
        return prepare(spec, folder)
    with mock.patch.object(qd.data.cifar, "load_cifar10", return_value=generated):
        return prepare(spec, folder)


def spec_of(cfg: dict, model: str, method: str, variant: str, args) -> dict:
    """The preset's spec of one run with the epochs cut to ``args.epochs`` in one stage, on ``args.device``."""
    from qd.config import RunId, run_spec

    spec = run_spec(cfg, RunId(TASK, model, method, variant, cfg["seeds"][0]))
    spec["device"] = args.device
    spec["train"].update(epochs=args.epochs, restarts=0, **switches(args))
    return spec


def switches(args) -> dict:
    on = {"channels_last": args.channels_last, "compile": args.compile, "autocast": args.autocast}
    return {k: v for k, v in on.items() if v not in (False, "off")}


def epoch_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def evaluation_seconds(spec: dict, run_dir: Path, data: Path) -> float:
    """Seconds of one per-epoch evaluation (the test split through the task's metric) of a finished run."""
    from qd.run import load_run_model
    from qd.tasks import load_task

    device = torch.device(spec["device"])
    task = load_task(spec["kind"])(spec, data, device)
    model = load_run_model(run_dir, device)
    task.epoch_metrics(model, "test")  # warm-up: first kernels, allocations
    sync(device)
    t0 = time.perf_counter()
    task.epoch_metrics(model, "test")
    sync(device)
    return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_label(device: str) -> str:
    """How the table names this device: e.g. ``H100-80GB`` from 'NVIDIA H100 80GB HBM3', as its rows
    name ``A100-80GB``; a CPU as ``cpu-<cores>core``."""
    if not device.startswith("cuda"):
        import os

        return f"cpu-{os.cpu_count()}core"
    name = torch.cuda.get_device_name(torch.device(device))
    chip = re.search(r"\b([A-Z]\d{2,3}[A-Z]?)\b", name)
    memory = round(torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30)
    gb = re.search(r"(\d+)\s*GB", name)
    return f"{chip[1] if chip else name.replace(' ', '-')}-{gb[1] if gb else memory}GB"


def replace_rows(path: Path, rows: list) -> None:
    """Write ``rows`` (``qd.cost.EpochTime``) into the table at ``path``, in place of any row of the same
    model, dataset and device; comments and other rows are kept as they are."""
    from qd.cost import COLUMNS, read_epoch_times, write_rows

    keys = {(r.model, r.dataset, r.device) for r in rows}
    at = [COLUMNS.index(c) for c in ("model", "dataset", "device")]
    lines = path.read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    kept = lines[:header + 1]
    for line in lines[header + 1:]:
        fields = next(csv.reader([line]), [])
        if line.startswith("#") or len(fields) < len(COLUMNS) or tuple(fields[i] for i in at) not in keys:
            kept.append(line)
    if not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    write_rows(rows, tmp)
    read_epoch_times(tmp)  # the table qd plan reads must still parse (columns, numbers, basis)
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--root", help="a folder with the CIFAR-10 data (as the preset's dataset.root); default: generated")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every run (the rows read the last)")
    ap.add_argument("--quick", action="store_true", help=f"{SIZES['quick'][0]} training and {SIZES['quick'][1]} "
                    "test images: checks the code runs, its times are no row")
    ap.add_argument("--label", help="the table's device name (default: from the GPU's name, e.g. H100-80GB)")
    ap.add_argument("--table", help=f"write the rows here (default on a GPU without --quick: {TABLE.relative_to(ROOT)})")
    ap.add_argument("--out", help="keep the run folders here (default: a temporary folder, removed)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--autocast", choices=("off", "bf16"), default="off")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("no CUDA device here: run on a GPU, or check the code with --device cpu --quick")
    table = Path(args.table) if args.table else TABLE if args.device.startswith("cuda") and not args.quick else None
    label = args.label or device_label(args.device)

    from qd.config import load_config, teacher_run
    from qd.cost import EpochTime
    from qd.run import execute

    n_train, n_test = SIZES["quick" if args.quick else "full"]
    dataset = {"root": args.root} if args.root else {}
    if args.root and args.quick:
        dataset["train_limit"] = n_train
    cfg = load_config(PRESET, {"tasks": {TASK: {"dataset": dataset}}} if dataset else None)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu_cifar10-"))
    started = time.perf_counter()
    try:
        data = work / "data"
        meta = prepare_data(cfg, data, None if args.root else generated_release(n_train, n_test))
        images = meta["sizes"]["train"]
        print(f"data: {meta.get('source')}, {meta['sizes']}; device {args.device} ({label}); "
              f"{args.epochs} epochs a run, batch {cfg['tasks'][TASK]['train']['batch_size']}"
              + (f"; switches {switches(args)}" if switches(args) else ""), flush=True)
        teacher = teacher_run(cfg, TASK)
        plan = [  # (label, model, method, variant, teacher folder, source folder)
            ("teacher fp", teacher.model, teacher.method, teacher.variant, None, None),
            (f"{STUDENT} fp", STUDENT, "fp", "fp32", None, None),
            (f"{STUDENT} qd", STUDENT, "qd", QUANTIZED, "teacher fp", None),
            (f"{STUDENT} dq", STUDENT, "dq", QUANTIZED, None, f"{STUDENT} fp"),
        ]
        specs, results = {}, {}
        for name, model, method, variant, reads_teacher, reads_source in plan:
            specs[name] = spec_of(cfg, model, method, variant, args)
            folder = work / name.replace(" ", "-")
            results[name] = (folder, execute(specs[name], folder, data,
                                             work / reads_teacher.replace(" ", "-") if reads_teacher else None,
                                             work / reads_source.replace(" ", "-") if reads_source else None))
        print(f"\n{'run':16s} {'epoch s':>9s} {'last epoch s':>13s} {'test acc %':>11s}")
        last = {}
        for name, (folder, row) in results.items():
            history = epoch_rows(folder)
            last[name] = float(history[-1]["seconds"])
            epochs = " ".join(f"{float(h['seconds']):.1f}" for h in history)
            print(f"{name:16s} {epochs:>9s} {last[name]:13.1f} {row['accuracy']:11.2f}")
        for name in (f"{STUDENT} qd", f"{STUDENT} dq"):
            print(f"{name} epoch / {STUDENT} fp epoch: {last[name] / last[f'{STUDENT} fp']:.2f}x")
        rows = []
        for name, model in (("teacher fp", teacher.model), (f"{STUDENT} fp", STUDENT)):
            folder = results[name][0]
            evaluation = evaluation_seconds(specs[name], folder, data)
            seconds = max(last[name] - evaluation, 1e-3)
            on = f"; {', '.join(f'train.{k}={v}' for k, v in switches(args).items())}" if switches(args) else ""
            rows.append(EpochTime(
                model, TASK, label, specs[name]["train"]["batch_size"], images, round(seconds, 1), "measured",
                f"benchmarks/gpu_cifar10.py: epoch {args.epochs} of a {args.epochs}-epoch fp run of the cifar10 "
                f"preset (qd.run.execute, {'real' if args.root else 'generated'} images), less its test-set "
                f"evaluation ({evaluation:.1f} s); torch {torch.__version__}, "
                f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}{on}"))
            print(f"row: {model}, {TASK}, {label}: {seconds:.1f} s an epoch ({images} images; evaluation "
                  f"{evaluation:.1f} s taken off)")
        if table is not None:
            replace_rows(table, rows)
            print(f"wrote {len(rows)} rows to {table}")
        else:
            print("no table written (--device cpu or --quick: pass --table FILE to write the rows)")
        print(f"total {time.perf_counter() - started:.0f} s")
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
