"""What a preset costs before it starts: runs, epochs and GPU hours (issue: 'a user must know what they start').

``config/epoch_times.csv`` holds one row per (model, dataset, device): seconds per training epoch at a
batch size, whether the number was **measured** or is an **estimate**, and where it came from. Users
add rows for their own hardware (``python -m qd.cost measure ...`` prints one); the plan says which of
its numbers rest on estimates.

How a run's time is counted from the table (``run_seconds``):

* a training epoch of the run's model: the table's ``seconds_per_epoch``;
* distillation (``distill``, ``qd``): plus the teacher's forward pass over the same images, taken as a
  third of the teacher's training epoch (a backward pass costs about two forwards);
* ``dq``: distils from the unquantized copy of the same model (official code), so plus a third of its
  own epoch;
* ``pm`` and pretrained teachers train nothing: 0 epochs (their evaluation is not counted);
* per-epoch evaluation on the validation and test splits: ``eval_share`` (their images over the
  training images) times a third of an epoch.

GPU hours assume linear scaling over GPUs (NVIDIA reports 7.72x on 8 A100s for ResNet-50 in TF32),
so they do not depend on how many GPUs a run uses; the wall time does.

Try: ``qd plan --config config/presets/imagenet.yaml --device A100-80GB`` (the runs of a preset and what
they cost), or ``python -m qd.cost measure --model wrn-16-10 --dataset cifar100 --batch 8``.
This module imports no torch unless it measures.
"""
from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

COLUMNS = ("model", "dataset", "device", "batch", "images_per_epoch", "seconds_per_epoch", "basis", "source")
BASES = ("measured", "estimate")
TRAINS_NOTHING = ("pm", "pretrained")
DISTILS_FROM_TEACHER = ("distill", "qd")
FORWARD_SHARE = 1 / 3  # a forward pass as a share of a training step (forward + backward ~ 3 forwards)


@dataclass(frozen=True)
class EpochTime:
    model: str
    dataset: str
    device: str
    batch: int
    images_per_epoch: int
    seconds_per_epoch: float
    basis: str  # measured | estimate
    source: str


@dataclass(frozen=True)
class PlannedRun:
    task: str
    dataset: str
    model: str
    method: str
    epochs: int
    teacher: str | None = None  # the model whose outputs a distilled run reads
    gpus: int = 1
    eval_share: float = 0.0  # (val + test images) / training images, evaluated every epoch
    images: int | None = None  # training images per epoch (None: the table row's)


@dataclass
class Plan:
    device: str
    runs: list[PlannedRun]
    seconds: dict[int, float]  # run position -> single-GPU seconds
    estimated: set[int] = field(default_factory=set)  # runs whose time rests on an estimate row
    missing: list[tuple[str, str]] = field(default_factory=list)  # (model, dataset) without a row
    used: dict[tuple[str, str], EpochTime] = field(default_factory=dict)  # (model, dataset) -> the row read

    @property
    def complete(self) -> bool:
        """Whether every run is counted (a total over fewer runs is partial and must say so)."""
        return len(self.seconds) == len(self.runs)

    @property
    def n_runs(self) -> int:
        return len(self.runs)

    @property
    def epochs(self) -> int:
        return sum(r.epochs for r in self.runs)

    @property
    def gpu_hours(self) -> float:
        return sum(self.seconds.values()) / 3600

    @property
    def wall_hours(self) -> float:
        """Hours if the runs ran one after another, each on its own ``gpus``."""
        return sum(s / self.runs[i].gpus for i, s in self.seconds.items()) / 3600


def read_epoch_times(path: str | Path) -> list[EpochTime]:
    """The rows of an epoch-time table, checked (columns, numbers, basis), with errors naming the line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"epoch-time table {path} does not exist (columns: {', '.join(COLUMNS)})")
    rows = []
    with open(path, newline="") as f:
        reader = csv.DictReader(row for row in f if not row.startswith("#"))
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})")
        for line, r in enumerate(reader, start=2):
            try:
                row = EpochTime(r["model"], r["dataset"], r["device"], int(r["batch"]), int(r["images_per_epoch"]),
                                float(r["seconds_per_epoch"]), r["basis"], r["source"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}, data row {line - 1}: {e}") from None
            if row.basis not in BASES:
                raise ValueError(f"{path}, data row {line - 1}: basis {row.basis!r} must be one of {BASES}")
            if row.seconds_per_epoch <= 0:
                raise ValueError(f"{path}, data row {line - 1}: seconds_per_epoch must be positive")
            rows.append(row)
    return rows


def lookup(table: Iterable[EpochTime], model: str, dataset: str, device: str) -> EpochTime | None:
    """The row for (model, dataset, device): a measured one before an estimate, the last of equals."""
    found = [r for r in table if (r.model, r.dataset, r.device) == (model, dataset, device)]
    found.sort(key=lambda r: r.basis == "measured")
    return found[-1] if found else None


def run_seconds(run: PlannedRun, table: list[EpochTime], device: str) -> tuple[float | None, bool, list]:
    """Single-GPU seconds of ``run`` (None when a row is missing), whether an estimate was used, and
    the (model, dataset) pairs without a row."""
    if run.method in TRAINS_NOTHING or run.epochs == 0:
        return 0.0, False, []
    own = lookup(table, run.model, run.dataset, device)
    reader = run.model if run.method == "dq" else run.teacher if run.method in DISTILS_FROM_TEACHER else None
    ref = lookup(table, reader, run.dataset, device) if reader else None
    missing = [(run.model, run.dataset)] if own is None else []
    if reader and ref is None:
        missing.append((reader, run.dataset))
    if missing:
        return None, False, missing
    scale = lambda row: row.seconds_per_epoch * (run.images or row.images_per_epoch) / row.images_per_epoch  # noqa: E731
    per_epoch = scale(own) * (1 + FORWARD_SHARE * run.eval_share)
    if ref is not None:
        per_epoch += FORWARD_SHARE * scale(ref)
    estimated = own.basis == "estimate" or (ref is not None and ref.basis == "estimate")
    return run.epochs * per_epoch, estimated, []


def plan_cost(runs: list[PlannedRun], table: list[EpochTime], device: str) -> Plan:
    plan = Plan(device, list(runs), {})
    for i, run in enumerate(plan.runs):
        seconds, estimated, missing = run_seconds(run, table, device)
        for m in missing:
            if m not in plan.missing:
                plan.missing.append(m)
        for m in (run.model, run.teacher if run.method in DISTILS_FROM_TEACHER else None):
            row = lookup(table, m, run.dataset, device) if m and seconds else None
            if row is not None:
                plan.used.setdefault((m, run.dataset), row)
        if seconds is not None:
            plan.seconds[i] = seconds
            if estimated:
                plan.estimated.add(i)
    return plan


def format_plan(plan: Plan, title: str = "plan") -> str:
    """Runs, epochs and GPU hours, in total and per (task, model, method)."""
    unit = "CPU hours" if plan.device.lower().startswith("cpu") else "GPU hours"
    uncounted = plan.n_runs - len(plan.seconds)
    if plan.complete:
        total = f"{plan.gpu_hours:.1f} {unit} ({plan.wall_hours:.1f} h of wall time one run after another)"
    else:  # never a bare total that leaves runs out: it is a lower bound and says so
        total = (f"{unit} PARTIAL: {uncounted} of {plan.n_runs} runs have no epoch time on {plan.device} and are "
                 f"not counted; the {len(plan.seconds)} counted runs take {plan.gpu_hours:.1f} {unit} "
                 f"({plan.wall_hours:.1f} h of wall time one after another), a lower bound of the total")
    lines = [f"{title} on {plan.device}: {plan.n_runs} runs, {plan.epochs} epochs, {total}"]
    if plan.estimated:
        share = sum(plan.seconds[i] for i in plan.estimated) / max(sum(plan.seconds.values()), 1e-9)
        lines.append(f"  {100 * share:.0f}% of the {unit} rest on estimated epoch times, not measurements")
    if plan.missing:
        lines.append("  no epoch time for " + ", ".join(f"{m} on {d}" for m, d in plan.missing)
                     + f" on {plan.device}: those runs are not counted; add rows to the epoch-time table")
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(plan.runs):
        groups.setdefault((r.task, r.model, r.method), []).append(i)
    lines.append(f"  {'task':<12} {'model':<12} {'method':<10} {'runs':>4} {'epochs':>7} {unit[:3] + ' h':>8}")
    for (task, model, method), idx in groups.items():
        hours = [plan.seconds[i] / 3600 for i in idx if i in plan.seconds]
        shown = f"{sum(hours):8.1f}" if len(hours) == len(idx) else f"{'?':>8}"
        mark = " *" if any(i in plan.estimated for i in idx) else ""
        lines.append(f"  {task:<12} {model:<12} {method:<10} {len(idx):>4} "
                     f"{sum(plan.runs[i].epochs for i in idx):>7} {shown}{mark}")
    if plan.estimated:
        lines.append("  * estimate")
    if plan.used:
        lines.append("  epoch times rest on:")
        lines += [f"    {m} on {d}: {r.seconds_per_epoch:g} s/epoch at batch {r.batch}, {r.basis}: {r.source}"
                  for (m, d), r in plan.used.items()]
    return "\n".join(lines)


def print_plan(runs: list[PlannedRun], table_path: str | Path, device: str, title: str = "plan") -> Plan:
    plan = plan_cost(runs, read_epoch_times(table_path), device)
    print(format_plan(plan, title))
    return plan


# ---------------------------------------------------------------------------------------- a config's runs
def dataset_sizes(name: str) -> tuple[int | None, int | None]:
    """Training and test images of a dataset's official splits, as its module declares them
    (``DATASETS[name]["sizes"]``; ``(None, None)`` where it declares none)."""
    from qd.tasks import builtin_datasets

    d = builtin_datasets().get(name)
    return d.sizes if d is not None and d.sizes else (None, None)


def dataset_shape(name: str) -> tuple[int, int, int]:
    """Image size, classes and training images per epoch (the schema's val_fraction 0.1) of a dataset
    whose module declares them (``DATASETS[name]["shape"]``)."""
    from qd.tasks import builtin_datasets

    return builtin_datasets()[name].shape


def shaped_datasets() -> list[str]:
    from qd.tasks import builtin_datasets

    return sorted(n for n, d in builtin_datasets().items() if d.shape)


def config_runs(cfg: dict) -> list[PlannedRun]:
    """Every planned run of a validated config, with the epochs, teacher and GPUs its spec says."""
    from qd.config import planned_runs, run_spec

    runs = []
    for run in planned_runs(cfg):
        spec = run_spec(cfg, run)
        train = spec.get("train")
        epochs = train["epochs"] * (train["restarts"] + 1) if train else 0
        if train and train.get("epoch_examples"):
            epochs = math.ceil(epochs * train["epoch_examples"] / (dataset_sizes(spec["dataset"])[0] or 1))
        dataset = cfg["tasks"][run.task]["dataset"]
        n_train, n_test = dataset_sizes(spec["dataset"])
        share, images = 0.0, None
        if n_train:
            val = round(n_train * dataset.get("val_fraction", 0.0))
            images = min(n_train - val, dataset.get("train_limit") or n_train)
            share = (val + n_test) / images
        teacher = cfg["tasks"][run.task]["models"]["teacher"] if "teacher" in spec else None
        runs.append(PlannedRun(run.task, spec["dataset"], run.model, run.method, epochs, teacher,
                               spec["processes"], share, images))
    return runs


# ---------------------------------------------------------------------------------------- measuring
def build_named_model(name: str, num_classes: int):
    """The models the table names: ``wrn-D-K``, ``resnetD``, ``<k>xresnetD`` (width k)."""
    from qd.models.resnet import resnet
    from qd.models.wide_resnet import wide_resnet_named

    if name.startswith("wrn-"):
        return wide_resnet_named(name, num_classes=num_classes)
    width, _, rest = name.rpartition("x") if "xresnet" in name else ("1", "", name)
    if rest.startswith("resnet") and rest[6:].isdigit():
        return resnet(int(rest[6:]), float(width), num_classes=num_classes)
    raise ValueError(f"cannot build {name!r} for timing (known forms: wrn-28-10, resnet34, 2xresnet18)")




def forward_flops(model, image_size: int) -> int:
    """FLOPs of one image's forward pass (torch's FLOP counter on shape-only tensors)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = model.to("meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, image_size, image_size, device="meta"))
    return counter.get_total_flops()


def measure_step_seconds(model, image_size: int, num_classes: int, batch: int, steps: int, device: str = "cpu",
                         warmup: int = 1) -> float:
    """Median seconds of a training step (forward, cross-entropy, backward, SGD) on random data."""
    import statistics
    import time

    import torch
    import torch.nn.functional as F

    model = model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured_row(model_name: str, dataset: str, batch: int, steps: int, device: str, label: str) -> EpochTime:
    """A ``measured`` row: the median step time times the steps of one epoch (synthetic data: no decoding)."""
    import torch

    image_size, classes, images = dataset_shape(dataset)
    torch.manual_seed(0)
    step = measure_step_seconds(build_named_model(model_name, classes), image_size, classes, batch, steps, device)
    threads = torch.get_num_threads() if device == "cpu" else None
    where = f"{label}; {threads} threads" if threads else label
    return EpochTime(model_name, dataset, label, batch, images, round(step * math.ceil(images / batch), 1),
                     "measured", f"median of {steps} steps after 1 warm-up, synthetic data, torch "
                     f"{torch.__version__}, {where}; epoch = steps x ceil(images/batch)")


def reference_estimate(model_name: str, dataset: str, device: str, batch: int, reference_images_per_s: float,
                       reference: str, reference_model: str = "resnet50", reference_size: int = 224) -> EpochTime:
    """An ``estimate`` row: a published throughput of ``reference_model`` scaled by forward FLOPs."""
    import torch

    image_size, classes, images = dataset_shape(dataset)
    with torch.device("meta"):  # shapes only: no time spent initialising weights
        model, ref = build_named_model(model_name, classes), build_named_model(reference_model, 1000)
    ratio = forward_flops(model, image_size) / forward_flops(ref, reference_size)
    seconds = images / (reference_images_per_s / ratio)
    return EpochTime(model_name, dataset, device, batch, images, round(seconds, 1), "estimate",
                     f"{reference}, scaled by forward FLOPs ({ratio:.3f}x {reference_model} at {reference_size}px); "
                     "not measured")


def write_rows(rows: Iterable[EpochTime], path: str | Path | None = None) -> None:
    import sys

    out = open(path, "a", newline="") if path else sys.stdout
    try:
        w = csv.writer(out, lineterminator="\n")
        for r in rows:
            w.writerow([getattr(r, c) for c in COLUMNS])
    finally:
        if path:
            out.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m qd.cost", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("plan", help="runs, epochs and GPU hours of a preset or config")
    pl.add_argument("--config", required=True, help="a config (YAML), e.g. config/presets/imagenet.yaml")
    pl.add_argument("--table", default="config/epoch_times.csv")
    pl.add_argument("--device", required=True, help="the table's device column, e.g. A100-80GB")
    me = sub.add_parser("measure", help="print a measured row for this machine")
    me.add_argument("--model", required=True)
    me.add_argument("--dataset", choices=shaped_datasets(), required=True)
    me.add_argument("--batch", type=int, required=True)
    me.add_argument("--steps", type=int, default=3)
    me.add_argument("--device", default="cpu")
    me.add_argument("--label", required=True, help="how the table names this device, e.g. 'cpu-2core-shared'")
    me.add_argument("--append", help="append the row to this table instead of printing it")
    a = p.parse_args(argv)
    if a.command == "plan":
        from qd.config import load_config

        cfg = load_config(a.config)
        print_plan(config_runs(cfg), a.table, a.device, f"preset {cfg['preset']}")
    else:
        write_rows([measured_row(a.model, a.dataset, a.batch, a.steps, a.device, a.label)], a.append)


if __name__ == "__main__":
    main()
