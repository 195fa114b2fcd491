"""``qd``: the suite's steps by hand, one subcommand per workflow stage.

    qd plan     --config config/config.yaml                 # the runs a config asks for
    qd data     --config config/config.yaml --task digits   # prepare a task's dataset
    qd train    --config config/config.yaml --task digits --model student1 --method qd --bits 4
    qd evaluate --run results/demo/digits/student1/qd/b4-d256/seed0
    qd load     results/demo/digits/student1/qd/b4-d256/seed0/model.qda  # the compressed file
    qd onnx     --run results/demo/digits/student1/qd/b4-d256/seed0  # as ONNX, checked against PyTorch
    qd translate --model results/demo/numbers/student1/qd/b4-d256/seed0/model.qda sentences.de  # translate with it
    qd classify  --model results/demo/digits/student1/qd/b4-d256/seed0/model.qda images/       # classify: a CSV row per image
    qd latency  --config config/config.yaml                 # time every finished run's final model
    qd report   --config config/config.yaml                 # summary, tables, claims, figures
    qd compare  --method lsq --preset demo                  # a method against PM, QD and DQ, paired tests
    qd diff     --preset demo                               # a finished run beside its reference record
    qd reference --preset demo                              # promote a finished run to the reference record
    qd readme   [--check]                                   # README sections from the reference records
    qd rehearse --preset cifar10                            # a paper preset's whole workflow on stand-in data

The workflow calls the same subcommands with ``--spec``: a file holding exactly what one job reads
(``results/<preset>/.specs/<hash>.json``, see ``qd.config.run_spec``), so a rule and a hand-typed
command run identical code, and the console shows one short line per job.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qd.config import (ConfigError, RunId, data_file, data_folder, data_spec, info, load_config, planned_runs,
                       results_root, run_spec, task_methods, variant_name)
from qd.errors import QdError


def _results_root(args, cfg: dict) -> Path:
    return Path(args.results) if getattr(args, "results", None) else Path("results") / cfg["preset"]


def _read_spec(arg: str) -> dict:
    """A spec from a file (what the workflow passes) or a JSON string (handy in scripts and tests)."""
    path = Path(arg)
    if arg.lstrip().startswith("{"):
        return json.loads(arg)
    if not path.exists():
        raise QdError(f"spec file {path} does not exist")
    return json.loads(path.read_text())


def cmd_plan(args) -> int:
    cfg = load_config(args.config)
    if args.device:
        from qd.cost import config_runs, print_plan

        print_plan(config_runs(cfg), args.table, args.device, f"preset {cfg['preset']}")
        return 0
    for run in planned_runs(cfg):
        print(run.path)
    return 0


def _manifest_path(out: str) -> Path:
    p = Path(out)
    return p if p.suffix == ".json" else p / "manifest.json"


def cmd_data(args) -> int:
    from qd.io import atomic_write_json
    from qd.tasks import DEFAULT_KIND, load_task

    if args.spec:
        spec = _read_spec(args.spec)
        manifest = _manifest_path(args.out)
    else:
        cfg = load_config(args.config)
        spec = data_spec(cfg, args.task)
        manifest = _manifest_path(args.out) if args.out else data_file(_results_root(args, cfg), args.task)
    meta = load_task(spec.get("kind", DEFAULT_KIND), spec.get("task_entry")).prepare(spec, manifest.parent)
    atomic_write_json({"dataset": spec, **meta}, manifest)  # last: the data rule's declared output
    print(f"prepared {spec['name']}: {meta.get('sizes')} -> {manifest.parent}", file=sys.stderr)
    return 0


def _spec_from_config(args) -> tuple[dict, Path, Path]:
    cfg = load_config(args.config)
    task = args.task or next(iter(cfg["tasks"]))
    teacher = args.model == cfg["tasks"][task]["models"]["teacher"]
    if not teacher and args.method not in task_methods(cfg, task):
        raise QdError(f"method {args.method!r} is not among {args.config}'s methods "
                      f"({', '.join(task_methods(cfg, task))})")
    quantized = not teacher and info(cfg, task, args.method).quantized
    if quantized and args.bits is None and args.variant is None:
        raise QdError(f"method {args.method!r} quantizes: give --bits (and --bucket or --no-bucket)")
    variant = args.variant or variant_name(args.bits if quantized else None, None if args.no_bucket else args.bucket)
    run = RunId(task, args.model, "fp" if teacher else args.method, variant, args.seed)
    results = _results_root(args, cfg)
    return run_spec(cfg, run), results, Path(args.out) if args.out else results / run.path


def _run_folders(spec: dict | None, args) -> tuple[Path, Path, Path | None, Path | None, dict]:
    """Output, data, teacher and source folders of a run. The workflow passes each (its rule's declared
    inputs); by hand, what is not given is looked up under the results root: ``--results``, the
    config's, or the one holding the spec file (``<results>/.specs/<hash>.json``)."""
    if args.config:
        spec, root, out = _spec_from_config(args)
    else:
        root = Path(args.results) if args.results else None
        if root is None and Path(args.spec).parent.name == ".specs":
            root = results_root(args.spec)
        out = Path(args.out) if args.out else None

    def under(arg, rel, flag):
        if arg:
            path = Path(arg)
            return path.parent if path.is_file() else path  # a declared input: a file in the folder
        if rel is None:
            return None
        if root is None:
            raise QdError(f"run {spec['run']}: cannot tell where {rel} is; give {flag} (or --results)")
        return root / rel

    out = out or under(None, spec["run"], "--out")
    data = under(args.data, data_folder(".", spec["task"]).as_posix(), "--data")
    teacher = under(args.teacher, spec["teacher"]["run"] if spec.get("teacher") else None, "--teacher")
    source = under(args.source, spec["source"]["run"] if spec.get("source") else None, "--source")
    return out, data, teacher, source, spec


def cmd_train(args) -> int:
    import contextlib
    import os

    from qd.gpu_slots import gpu_slot

    spec = _read_spec(args.spec) if args.spec else None
    out, data, teacher, source, spec = _run_folders(spec, args)
    # one GPU per job on a multi-GPU machine, claimed before CUDA starts; torchrun's processes use the
    # GPUs the job was given, one each
    slot = contextlib.nullcontext() if "WORLD_SIZE" in os.environ else gpu_slot(spec["device"])
    with slot:
        from qd.run import execute

        row = execute(spec, out, data, teacher, source)
    if row is None:  # another rank of a torchrun job: rank 0 reports
        return 0
    primary = row["primary_metric"]
    print(f"{spec['run']}: {primary} {row[primary]:.2f}, size {row['size_on_disk'] / 1e6:.4f} MB on disk "
          f"(fp32 {row['size_fp32'] / 1e6:.4f} MB) -> {out}", file=sys.stderr)
    return 0


def _task_for(header: dict, data: Path, device: str = "cpu"):
    import torch

    from qd.run import task_of

    folder = data if data.is_dir() else data.parent
    return task_of(header)({"evaluation": {"batch_size": 512}}, folder, torch.device(device))


def _evaluate_model(model, header: dict, data: Path) -> None:
    task = _task_for(header, data)
    metrics, _ = task.final_metrics(model)
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
    if "accuracy" in metrics:
        print(f"test: accuracy {metrics['accuracy']:.2f}% top5 {metrics['top5']:.2f}% loss {metrics['test_loss']:.4f}")


def cmd_evaluate(args) -> int:
    from qd.run import ARTEFACT, model_from_artefact
    from qd.use import run_data_folder

    run_dir = Path(args.run)
    model, _, header = model_from_artefact(run_dir / ARTEFACT)
    _evaluate_model(model, header, run_data_folder(run_dir, header, args.data))
    return 0


def cmd_export(args) -> int:
    """Write a finished run's compressed model to another file (re-encoded from what it holds), or as ONNX."""
    from qd.artefact import export_artefact, load_artefact
    from qd.run import ARTEFACT

    if args.format == "onnx":
        from qd.onnx import export_onnx

        info = export_onnx(Path(args.run) / ARTEFACT, args.out)
        files = ", ".join(str(p) for p in info["files"].values())
        print(f"{files}: {info['size_onnx']:,} bytes (opset {info['opset']}), {len(info['tensors'])} tensors "
              f"stored as integers; model.qda {info['size_qda']:,} bytes, {info['size_analytic']:,.0f} by the "
              "paper's formula")
        return 0
    state, codes, header = load_artefact(Path(args.run) / ARTEFACT)
    size = export_artefact(args.out, state, codes, header)
    print(f"{args.out}: {size:,} bytes, {len(codes)} quantized tensors")
    return 0


def cmd_onnx(args) -> int:
    """A finished run as ONNX in its folder, with its agreement with PyTorch on the test set (onnx.json)."""
    from qd.onnx.run import onnx_run
    from qd.run import ARTEFACT, model_from_artefact
    from qd.use import run_data_folder

    _, _, header = model_from_artefact(Path(args.run) / ARTEFACT)
    record = onnx_run(Path(args.run), run_data_folder(Path(args.run), header, args.data), args.threads,
                      args.calibration)
    for name, part in [("model", record), *([("integer path", record["integer"])] if "integer" in record else [])]:
        a = part["agreement"]
        print(f"{record['run']} {name}: {part['size_onnx']:,} bytes; predicts as PyTorch on {a['agree']} of "
              f"{a['n']} test examples ({a['agreement']:.2%}, {a['compared']})")
    return 0


def cmd_load(args) -> int:
    """Read an artefact back into a model: what it holds, its sizes, and (with --data) its metrics."""
    from qd.run import model_from_artefact
    from qd.size import model_sizes

    model, codes, header = model_from_artefact(args.file)
    sizes = model_sizes(dict(model.named_parameters()), codes)
    print(f"{args.file}: run {header.get('run', '?')}, {sizes['params']:,} parameters "
          f"({sizes['quantized_params']:,} quantized in {len(codes)} tensors)")
    print(f"size: {Path(args.file).stat().st_size:,} bytes on disk, {sizes['size_analytic']:,.0f} by the paper's "
          f"formula, {sizes['size_fp32']:,} in fp32")
    if args.data:
        _evaluate_model(model, header, Path(args.data))
    return 0


def cmd_translate(args) -> int:
    from qd.use import translate

    return translate(args.model, args.source, args.out, args.data, args.device)


def cmd_classify(args) -> int:
    from qd.use import classify

    return classify(args.model, args.images, args.out, args.data, args.device)


def cmd_latency(args) -> int:
    """Time the final model of every planned run into one CSV (the workflow runs it alone, after training)."""
    from qd.latency import time_runs

    cfg = load_config(args.config)
    results = _results_root(args, cfg)
    extra = None
    if cfg["evaluation"]["onnx"]["enabled"]:  # the exported models are timed in the same job, beside PyTorch
        from qd.onnx.run import onnx_latency_of as extra
    time_runs(cfg, results, Path(args.out) if args.out else results / "latency.csv", extra)
    return 0


def cmd_depth_latency(args) -> int:
    """Time the paper's deep and shallow architectures (qd/speed.py) into a CSV."""
    import pandas as pd

    from qd.io import atomic_write_text
    from qd.run import resolve_device
    from qd.speed import depth_latency

    rows = depth_latency(args.batch, args.image_size, args.warmup, args.repeats, args.threads,
                         resolve_device(args.device))
    atomic_write_text(pd.DataFrame(rows).to_csv(index=False), args.out)
    for r in rows:
        print(f"{r['group']:9s} {r['model']:12s} depth {r['depth']:3d}: {r['median_ms']:9.2f} ms "
              f"({r['relative_time']:.2f}x the deepest)", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from qd.report.build import build_report

    cfg = load_config(args.config) if args.config else None
    preset = cfg["preset"] if cfg else Path(args.results).name
    results = Path(args.results) if args.results else Path("results") / preset
    figures = Path(args.figures) if args.figures else Path("figures") / preset
    build_report(results, figures, cfg, targets=Path(args.targets))
    return 0


def _use_parser(sub, name: str, kind: str, help: str) -> argparse.ArgumentParser:
    """A subcommand that uses a model file (qd/use.py): the file, its data folder, the device."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--model", required=True, help=f"a {kind} model file (a run's model.qda)")
    p.add_argument("--data", help="the task's prepared data folder (default: <results>/<task>/data of the results "
                                  "folder holding the run)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="list the runs a config asks for, or with --device what they cost")
    plan.add_argument("--config", required=True)
    plan.add_argument("--device", help="estimate runs, epochs and GPU hours on this device of the epoch-time table")
    plan.add_argument("--table", default=str(Path(__file__).resolve().parents[1] / "config" / "epoch_times.csv"),
                      help="seconds per epoch by model, dataset and device (add rows for your hardware)")
    plan.set_defaults(func=cmd_plan)

    data = sub.add_parser("data", help="prepare a task's dataset")
    data.add_argument("--config")
    data.add_argument("--task")
    data.add_argument("--spec", help="a data spec file (written by the workflow) or JSON")
    data.add_argument("--out", help="the data folder, or its manifest.json")
    data.add_argument("--results")
    data.set_defaults(func=cmd_data)

    train = sub.add_parser("train", help="train (or quantize) one run: teacher, student, any method")
    train.add_argument("--config")
    train.add_argument("--task")
    train.add_argument("--model")
    train.add_argument("--method")
    train.add_argument("--bits", type=int)
    train.add_argument("--bucket", type=int, default=256)
    train.add_argument("--no-bucket", action="store_true", help="one bucket per tensor")
    train.add_argument("--variant", help="run variant name (fp32, b4-d256, b2-nobucket)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--spec", help="a run's spec file (results/<preset>/.specs/<hash>.json) or JSON")
    train.add_argument("--data", help="the task's prepared data folder or its manifest (default: under the results folder)")
    train.add_argument("--teacher", help="finished teacher run folder or its model.qda (default: under the results folder)")
    train.add_argument("--source", help="finished source-student run folder or its model.qda (pm, dq)")
    train.add_argument("--results", help="the preset's results folder the spec's run paths are relative to")
    train.add_argument("--out", help="the run folder (default: <results>/<run>)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="re-evaluate a finished run's saved model")
    ev.add_argument("--run", required=True)
    ev.add_argument("--data")
    ev.set_defaults(func=cmd_evaluate)

    lat = sub.add_parser("latency", help="time the final model of every finished run of a config")
    lat.add_argument("--config", required=True)
    lat.add_argument("--results")
    lat.add_argument("--out", help="CSV file to write (default: <results>/latency.csv)")
    lat.set_defaults(func=cmd_latency)

    dep = sub.add_parser("depth-latency", help="time deep vs shallow architectures (the paper's speed claim)")
    dep.add_argument("--out", required=True, help="CSV file to write")
    dep.add_argument("--batch", type=int, default=1)
    dep.add_argument("--image-size", type=int, default=224)
    dep.add_argument("--warmup", type=int, default=2)
    dep.add_argument("--repeats", type=int, default=5)
    dep.add_argument("--threads", type=int, default=1)
    dep.add_argument("--device", default="auto")
    dep.set_defaults(func=cmd_depth_latency)

    exp = sub.add_parser("export", help="write a finished run's compressed model file elsewhere")
    exp.add_argument("--run", required=True)
    exp.add_argument("--out", required=True)
    exp.add_argument("--format", choices=("qda", "onnx"), default="qda",
                     help="qda: the compressed file; onnx: weights as low-bit integers with their scales (docs/onnx.md)")
    exp.set_defaults(func=cmd_export)

    onx = sub.add_parser("onnx", help="a finished run as ONNX in its folder, checked against PyTorch (onnx.json)")
    onx.add_argument("--run", required=True)
    onx.add_argument("--data", help="the task's prepared data folder (default: under the run's results folder)")
    onx.add_argument("--threads", type=int, default=1)
    onx.add_argument("--calibration", type=int, default=512,
                     help="training images that calibrate the integer path's activations (8-bit per-channel runs)")
    onx.set_defaults(func=cmd_onnx)

    load = sub.add_parser("load", help="load a compressed model file: contents, sizes, metrics with --data")
    load.add_argument("file")
    load.add_argument("--data", help="a task's prepared data folder (results/<preset>/<task>/data) to evaluate on")
    load.set_defaults(func=cmd_load)

    tr = _use_parser(sub, "translate", "translation",
                     "translate sentences with a model file: one output line per input line")
    tr.add_argument("source", nargs="?", help="raw source sentences, one per line (default or '-': standard input)")
    tr.add_argument("--out", help="file to write the translations to (default: standard output)")
    tr.set_defaults(func=cmd_translate)

    cl = _use_parser(sub, "classify", "classification",
                     "classify image files with a model file: one CSV row per image")
    cl.add_argument("images", nargs="+", help="image files, or folders of them")
    cl.add_argument("--out", help="CSV file to write (default: standard output)")
    cl.set_defaults(func=cmd_classify)

    rep = sub.add_parser("report", help="summary.csv, tables, claims.md and figures from finished runs")
    rep.add_argument("--config", help="a config (YAML) or the workflow's resolved config (JSON)")
    rep.add_argument("--results")
    rep.add_argument("--figures")
    rep.add_argument("--targets", default=str(Path(__file__).resolve().parents[1] / "config" / "paper_targets.csv"))
    rep.set_defaults(func=cmd_report)
    return p


def _check_train_args(args, parser) -> None:
    if args.command == "train" and not args.spec:
        missing = [f"--{k}" for k in ("config", "model", "method") if not getattr(args, k)]
        if missing:
            parser.error(f"qd train needs {', '.join(missing)} (or --spec)")


# subcommands that parse their own arguments (their modules document them)
DELEGATED = {"readme": "qd.report.readme", "compare": "qd.report.compare", "diff": "qd.report.diff",
             "reference": "qd.report.reference", "rehearse": "qd.rehearse"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_train_args(args, parser)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"qd: {e}", file=sys.stderr)
        return 2
    except QdError as e:
        # expected failures: the message says what and where; a traceback would only hide it
        print(f"qd: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
