"""A distilled epoch against a normal one of the same student, with the teacher's views cached and with
the teacher at every step; the resident uint8 data path against the one it replaced.

Design budget: a distilled epoch with K cached teacher views (``distill.teacher_views``) within 1.15x
of a normal epoch of the same student. Run from the repository root::

    .venv/bin/python benchmarks/bench_distill_epoch.py                 # generated images
    .venv/bin/python benchmarks/bench_distill_epoch.py --quick         # tiny settings: checks that it runs
    .venv/bin/python benchmarks/bench_distill_epoch.py --teacher-width 0.5   # the half-width teacher of cifar10-cpu
    .venv/bin/python benchmarks/bench_distill_epoch.py --data results/cifar10/cifar10/data   # real images
    .venv/bin/python benchmarks/bench_distill_epoch.py --record        # also save benchmarks/results/distill_epoch.json

The models, recipe and batch are the preset's (``--preset``, default ``cifar10``: the paper's student 3,
111,935 parameters, and teacher, SGD Nesterov, batch 25, crop + flip) as ``qd.config.run_spec`` gives
them: the normal epoch is the ``fp`` run's (student with its dropout), the distilled epochs the
``distill`` run's (no dropout, the official code's distilled students). Every epoch goes through the
task adapter and the method's objective (``qd.tasks.classification``, ``RunContext.objective``) and
the engine's step (forward, loss, backward, optimizer step) over ``--images`` training images:

* ``normal``: cross-entropy on cropped and flipped batches;
* ``views``: the distillation loss toward the teacher's cached logits on K fixed views per image
  (``qd/teacher_views.py``; the cache is computed once before timing, and its cost printed as a
  multiple of a normal epoch: it is paid once per teacher);
* ``teacher``: the distillation loss with the teacher run on every augmented batch (``teacher_views: 0``).

Data paths, batches only (no model): the training set resident as uint8 pixels, each batch cropped,
flipped and normalised on the device (today's), against the path it replaced: the whole training set
normalised once to float32 and each batch cropped from it (padding grey, 4x the memory traffic).

Images are generated 32x32 uint8 (seeded) unless ``--data`` names a prepared CIFAR data folder.
Epochs run in interleaved rounds (normal, views, teacher, ...) and each ratio is the median of the
per-round ratios, so load from other processes hits all variants alike. Ratios only: no timed
assertions. ``--record`` saves the ratios and their budgets as the record that ``benchmarks/README.md``
is generated from (``qd readme``).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from qd import teacher_views
from qd.config import RunId, load_config, preset_file, run_spec, teacher_run, views_file
from qd.data import Splits, load_prepared, save_splits, with_official_test
from qd.data.augment import crop_and_flip
from qd.data.cifar import MEAN, STD
from qd.methods.contract import RunContext
from qd.run import file_id, resolve_device
from qd.tasks.classification import SPLIT_FILE, Classification
from qd.train import make_optimizer

BUDGET = 1.15  # a distilled epoch with cached views / a normal epoch (issue 19)
TASK = "cifar10"


def specs(preset: str, student: str, k: int, device: str) -> dict[str, dict]:
    """The run specs of the preset's normal and distilled student and its teacher; the distilled one
    with and without ``teacher_views``."""
    cfg = load_config(preset_file(preset))
    runs = {"normal": RunId(TASK, student, "fp", "fp32", 0), "teacher": RunId(TASK, student, "distill", "fp32", 0)}
    out = {name: run_spec(cfg, run) for name, run in runs.items()}
    out["teacher"]["distill"].pop("teacher_views", None)  # a preset that caches views: this side does not
    out["views"] = run_spec(cfg, runs["teacher"])
    out["views"]["distill"]["teacher_views"] = k
    out["teacher run"] = run_spec(cfg, teacher_run(cfg, TASK))
    for s in out.values():
        s["device"] = device
        s["train"]["augment"] = True  # distillation with crop + flip is measured, whatever the preset says
    return out


def generated_data(folder: Path, images: int) -> None:
    """``images`` seeded random 32x32 uint8 training images (and a few test ones) as a prepared split."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images + 100, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (images + 100,), generator=g)
    meta = {"dataset": "cifar10", "in_channels": 3, "num_classes": 10, "image_size": 32, "source": "generated",
            "normalize": {"mean": list(MEAN), "std": list(STD)}}
    splits: Splits = with_official_test((x[:images], y[:images]), (x[images:], y[images:]),
                                        {"val_fraction": 0.0, "split_seed": 0}, meta)
    save_splits(splits, folder / SPLIT_FILE)


def epoch_of(task, objective, params, spec: dict, seed: int):
    """One epoch of the engine's steps (``qd.train``), without its evaluation and checkpoint."""
    optimizer = make_optimizer(params, spec["train"])
    epoch = [seed]

    def run():
        epoch[0] += 1
        for batch in task.train_batches(spec["train"]["batch_size"], torch.Generator().manual_seed(epoch[0])):
            loss = objective(batch)
            loss.item()  # the engine's one sync per step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def resident_batches(task, batch: int):
    """Today's data path: the uint8 training set on the device, cropped, flipped and normalised per batch."""

    def run():
        for b in task.train_batches(batch, torch.Generator().manual_seed(1)):
            b[0].sum().item()

    return run


def replaced_batches(task, batch: int):
    """The path it replaced: the training set normalised once to float32, each batch cropped from it."""
    x = task.normalise(task.train[0])
    y = task.train[1]

    def run():
        g = torch.Generator().manual_seed(1)
        order = torch.randperm(len(y), generator=g)[: task.epoch_examples]
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            crop_and_flip(x[idx], g).sum().item()

    return run


def side_by_side(epochs: dict, rounds: int) -> dict:
    """Seconds per epoch of each variant in each of the interleaved rounds (one warm-up epoch first)."""
    times = {name: [] for name in epochs}
    for fn in epochs.values():
        fn()
    for _ in range(rounds):
        for name, fn in epochs.items():
            times[name].append(Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).timeit(1).median)
    return times


def ratio(times: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cifar10", help="the preset whose models, recipe and batch are used")
    ap.add_argument("--student", default="student3")
    ap.add_argument("--teacher-width", type=float, help="the teacher's width factor (default: the preset's)")
    ap.add_argument("--views", type=int, default=8, help="K, the teacher's cached views per image")
    ap.add_argument("--images", type=int, default=2000, help="training images per epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", help="a prepared CIFAR-10 data folder (split.pt) instead of generated images")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="tiny settings (200 images, 2 views, 1 round): checks it runs")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/distill_epoch.json (the README's)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.views, args.rounds = 200, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    s = specs(args.preset, args.student, args.views, str(device))
    if args.teacher_width:
        s["teacher run"]["model"]["width"] = args.teacher_width
    batch = s["normal"]["train"]["batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        folder, teacher_dir = Path(tmp) / "data", Path(tmp) / "teacher"
        folder.mkdir()
        teacher_dir.mkdir()
        if args.data:
            given = Path(args.data).resolve()
            (folder / SPLIT_FILE).symlink_to((given if given.is_dir() else given.parent) / SPLIT_FILE)
            load_prepared(folder / SPLIT_FILE)  # a clear error now if it is missing
        else:
            generated_data(folder, args.images)
        for spec in s.values():
            spec["train"]["epoch_examples"] = args.images
        tasks = {name: Classification(s[name], folder, device) for name in ("normal", "views", "teacher")}
        t = tasks["normal"]
        torch.manual_seed(0)
        teacher = t.build_model(s["teacher run"]["model"], t.model_meta()).to(device).eval()
        torch.save(teacher.state_dict(), teacher_dir / "model.qda")  # stands in for the teacher's artefact

        cache_time = Timer("fn()", globals={"fn": lambda: torch.save(
            teacher_views.compute(teacher, *t.train, t.normalise, args.views, file_id(teacher_dir / "model.qda"),
                                  s["teacher run"]["evaluation"]["batch_size"]),
            teacher_dir / views_file(args.views))}).timeit(1).median
        tasks["views"].use_teacher_run(teacher_dir)

        epochs = {}
        for name, task in tasks.items():
            torch.manual_seed(0)
            student = task.build_model(s[name]["model"], task.model_meta()).to(device).train()
            ctx = RunContext(s[name], task, device, Path(tmp))
            objective = ctx.objective(student, None if name == "normal" else teacher)
            epochs[name] = epoch_of(task, objective, list(student.parameters()), s[name], seed=100)
        n_train = len(t.train[1])
        n_params = sum(p.numel() for p in student.parameters())
        n_teacher = sum(p.numel() for p in teacher.parameters())
        source = args.data or "generated 32x32 uint8 images"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; preset {args.preset}: "
              f"{args.student} ({n_params:,} parameters), teacher ({n_teacher:,}), batch {batch}, "
              f"{args.images} images per epoch ({source}), K = {args.views}")
        times = side_by_side(epochs, args.rounds)
        for name, ts in times.items():
            print(f"  {name:8s} median {statistics.median(ts):8.2f} s per epoch over {len(ts)} rounds")
        normal = statistics.median(times["normal"])
        data_times = side_by_side({"resident": resident_batches(tasks["normal"], batch),
                                   "replaced": replaced_batches(tasks["normal"], batch)}, args.rounds)
    rows = [
        (f"distilled epoch, {args.views} cached teacher views / normal epoch", ratio(times, "views", "normal"), BUDGET),
        ("distilled epoch, teacher at every step / normal epoch", ratio(times, "teacher", "normal"), None),
        (f"computing the {args.views}-view cache (once per teacher) / normal epoch of as many images",
         cache_time / normal * args.images / n_train, None),
        ("data path: resident uint8 batches / replaced float32 batches",
         ratio(data_times, "resident", "replaced"), None),
        ("data path: resident uint8 batches / normal epoch", statistics.median(data_times["resident"]) / normal, None),
    ]
    for label, r, budget in rows:
        verdict = f"   budget {budget:.2f}  {'ok' if r <= budget else 'MISSED'}" if budget else ""
        print(f"  {label:70s} {r:6.2f}{verdict}")
    if args.record:
        from qd.report.benchmark import save_benchmark

        what = f"{args.student} of {args.preset}, batch {batch}, {args.images} images ({source}), {device}"
        records = [{"what": f"{label}, {what}", "value": r, "unit": "x", "budget": budget, "better": "lower",
                    "digits": 2} for label, r, budget in rows]
        save_benchmark("distill_epoch", __file__, argv, records)


if __name__ == "__main__":
    main()
