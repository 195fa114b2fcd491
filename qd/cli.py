"""``qd``: the suite's steps by hand, one subcommand per workflow stage.

    qd plan     --config config/config.yaml                 # the runs a config asks for
    qd data     --config config/config.yaml --task digits   # prepare a task's dataset
    qd train    --config config/config.yaml --task digits --model student1 --method qd --bits 4
    qd evaluate --run results/demo/digits/student1/qd/b4-d256/seed0
    qd load     results/demo/digits/student1/qd/b4-d256/seed0/model.qda  # the compressed file
    qd report   --config config/config.yaml                 # summary, tables, claims, figures

The workflow calls the same subcommands with ``--spec`` (a run's resolved spec as JSON) instead of
``--config``, so a rule and a hand-typed command run identical code.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qd.errors import QdError
from qd.config import (ConfigError, RunId, data_file, info, load_config, planned_runs, run_spec, source_run,
                       task_methods, teacher_run, validate, variant_name)


def _results_root(args, cfg: dict) -> Path:
    return Path(args.results) if args.results else Path("results") / cfg["preset"]


def cmd_plan(args) -> int:
    cfg = load_config(args.config)
    for run in planned_runs(cfg):
        print(run.path)
    return 0


def cmd_data(args) -> int:
    from qd.data import prepare, save_splits
    from qd.io import atomic_write_json

    if args.spec:
        spec = json.loads(args.spec)
        out = Path(args.out)
    else:
        cfg = load_config(args.config)
        spec = cfg["tasks"][args.task]["dataset"]
        out = Path(args.out) if args.out else data_file(_results_root(args, cfg), args.task)
    splits = prepare(spec)
    save_splits(splits, out)
    atomic_write_json({"dataset": spec, **splits.meta}, out.with_name("manifest.json"))
    print(f"prepared {spec['name']}: {splits.meta['sizes']} -> {out}", file=sys.stderr)
    return 0


def _spec_from_config(args) -> tuple[dict, Path, Path, Path | None, Path | None]:
    cfg = load_config(args.config)
    task = args.task or next(iter(cfg["tasks"]))
    if args.method not in task_methods(cfg, task):
        raise QdError(f"method {args.method!r} is not among {args.config}'s methods "
                      f"({', '.join(task_methods(cfg, task))})")
    quantized = info(cfg, task, args.method).quantized
    if quantized and args.bits is None and args.variant is None:
        raise QdError(f"method {args.method!r} quantizes: give --bits (and --bucket or --no-bucket)")
    variant = args.variant or variant_name(args.bits if quantized else None, None if args.no_bucket else args.bucket)
    run = RunId(task, args.model, args.method, variant, args.seed)
    results = _results_root(args, cfg)
    spec = run_spec(cfg, run)
    teacher = results / teacher_run(cfg, task).path if spec["method"]["needs_teacher"] else None
    src = source_run(cfg, run)
    source = results / src.path if src else None
    out = Path(args.out) if args.out else results / run.path
    return spec, out, data_file(results, task), teacher, source


def cmd_train(args) -> int:
    from qd.gpu_slots import gpu_slot

    if args.spec:
        spec = json.loads(args.spec)
        out, data, teacher, source = Path(args.out), Path(args.data), args.teacher, args.source
    else:
        spec, out, data, teacher, source = _spec_from_config(args)
    with gpu_slot(spec["train"]["device"]):  # one GPU per job on a multi-GPU machine, before CUDA starts
        from qd.run import execute

        row = execute(spec, out, data, teacher, source)
    print(f"{spec['run']}: accuracy {row['accuracy']:.2f}%, size {row['size_analytic'] / 1e6:.4f} MB "
          f"(fp32 {row['size_fp32'] / 1e6:.4f} MB) -> {out}", file=sys.stderr)
    return 0


def _evaluate_model(model, data: Path) -> None:
    from qd.data import load_splits
    from qd.evaluate import classify

    splits = load_splits(data)
    for split in ("val", "test"):
        r = classify(model, *splits.split(split))
        print(f"{split}: accuracy {r['accuracy']:.2f}% top5 {r['top5']:.2f}% loss {r['loss']:.4f}")


def cmd_evaluate(args) -> int:
    from qd.run import ARTEFACT, model_from_artefact

    run_dir = Path(args.run)
    model, _, header = model_from_artefact(run_dir / ARTEFACT)
    data = Path(args.data) if args.data else data_file(run_dir.parents[4], header["task"])
    _evaluate_model(model, data)
    return 0


def cmd_export(args) -> int:
    """Write a finished run's compressed model to another file (re-encoded from what it holds)."""
    from qd.artefact import export_artefact, load_artefact
    from qd.run import ARTEFACT

    state, codes, header = load_artefact(Path(args.run) / ARTEFACT)
    size = export_artefact(args.out, state, codes, header)
    print(f"{args.out}: {size:,} bytes, {len(codes)} quantized tensors")
    return 0


def cmd_load(args) -> int:
    """Read an artefact back into a model: what it holds, its sizes, and (with --data) its accuracy."""
    from qd.run import model_from_artefact
    from qd.size import model_sizes

    model, codes, header = model_from_artefact(args.file)
    sizes = model_sizes(dict(model.named_parameters()), codes)
    print(f"{args.file}: run {header.get('run', '?')}, {sizes['params']:,} parameters "
          f"({sizes['quantized_params']:,} quantized in {len(codes)} tensors)")
    print(f"size: {Path(args.file).stat().st_size:,} bytes on disk, {sizes['size_analytic']:,.0f} by the paper's "
          f"formula, {sizes['size_fp32']:,} in fp32")
    if args.data:
        _evaluate_model(model, Path(args.data))
    return 0


def cmd_latency(args) -> int:
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

    if args.config_json:
        cfg = validate(json.loads(args.config_json))
    else:
        cfg = load_config(args.config) if args.config else None
    preset = cfg["preset"] if cfg else Path(args.results).name
    results = Path(args.results) if args.results else Path("results") / preset
    figures = Path(args.figures) if args.figures else Path("figures") / preset
    build_report(results, figures, cfg, targets=Path(args.targets))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    plan = sub.add_parser("plan", help="list the runs a config asks for")
    plan.add_argument("--config", required=True)
    plan.set_defaults(func=cmd_plan)

    data = sub.add_parser("data", help="prepare a task's dataset (train/val/test tensors)")
    data.add_argument("--config")
    data.add_argument("--task")
    data.add_argument("--spec", help="a task's dataset block as JSON (used by the workflow)")
    data.add_argument("--out")
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
    train.add_argument("--spec", help="a run's resolved spec as JSON (used by the workflow)")
    train.add_argument("--data")
    train.add_argument("--teacher", help="finished teacher run folder")
    train.add_argument("--source", help="finished source-student run folder (pm, dq)")
    train.add_argument("--results")
    train.add_argument("--out")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="re-evaluate a finished run's saved model")
    ev.add_argument("--run", required=True)
    ev.add_argument("--data")
    ev.set_defaults(func=cmd_evaluate)

    lat = sub.add_parser("latency", help="time deep vs shallow architectures (the paper's speed claim)")
    lat.add_argument("--out", required=True, help="CSV file to write")
    lat.add_argument("--batch", type=int, default=1)
    lat.add_argument("--image-size", type=int, default=224)
    lat.add_argument("--warmup", type=int, default=2)
    lat.add_argument("--repeats", type=int, default=5)
    lat.add_argument("--threads", type=int, default=1)
    lat.add_argument("--device", default="auto")
    lat.set_defaults(func=cmd_latency)

    exp = sub.add_parser("export", help="write a finished run's compressed model file elsewhere")
    exp.add_argument("--run", required=True)
    exp.add_argument("--out", required=True)
    exp.set_defaults(func=cmd_export)

    load = sub.add_parser("load", help="load a compressed model file: contents, sizes, accuracy with --data")
    load.add_argument("file")
    load.add_argument("--data", help="a prepared split (results/<preset>/<task>/data/split.pt) to evaluate on")
    load.set_defaults(func=cmd_load)

    rep = sub.add_parser("report", help="summary.csv, tables, claims.md and figures from finished runs")
    rep.add_argument("--config")
    rep.add_argument("--config-json", help="the resolved config as JSON (used by the workflow)")
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
    if args.command == "train" and args.spec and not (args.out and args.data):
        parser.error("qd train --spec needs --out and --data")


def main(argv: list[str] | None = None) -> int:
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
