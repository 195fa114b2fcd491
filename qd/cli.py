"""``qd``: the suite's steps by hand, one subcommand per workflow stage.

    qd plan     --config config/config.yaml                 # the runs a config asks for
    qd data     --config config/config.yaml --task digits   # prepare a task's dataset
    qd train    --config config/config.yaml --task digits --model student1 --method qd --bits 4
    qd evaluate --run results/demo/digits/student1/qd/b4-d256/seed0
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
from qd.config import (ConfigError, RunId, load_config, planned_runs, run_spec, source_run, teacher_run,
                       validate, variant_name)


def _results_root(args, cfg: dict) -> Path:
    return Path(args.results) if args.results else Path("results") / cfg["preset"]


def _data_path(results: Path, task: str) -> Path:
    return results / task / "data" / "split.pt"


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
        out = Path(args.out) if args.out else _data_path(_results_root(args, cfg), args.task)
    splits = prepare(spec)
    save_splits(splits, out)
    atomic_write_json({"dataset": spec, **splits.meta}, out.with_name("manifest.json"))
    print(f"prepared {spec['name']}: {splits.meta['sizes']} -> {out}", file=sys.stderr)
    return 0


def _spec_from_config(args) -> tuple[dict, Path, Path, Path | None, Path | None]:
    cfg = load_config(args.config)
    task = args.task or next(iter(cfg["tasks"]))
    variant = args.variant or variant_name(args.bits, None if args.no_bucket else args.bucket)
    if args.method in ("fp", "distill") and args.bits is None:
        variant = "fp32"
    run = RunId(task, args.model, args.method, variant, args.seed)
    results = _results_root(args, cfg)
    spec = run_spec(cfg, run)
    teacher = results / teacher_run(cfg, task).path if spec["method"]["needs_teacher"] else None
    src = source_run(cfg, run)
    source = results / src.path if src else None
    out = Path(args.out) if args.out else results / run.path
    return spec, out, _data_path(results, task), teacher, source


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


def cmd_evaluate(args) -> int:
    import torch

    from qd.data import load_splits
    from qd.evaluate import classify
    from qd.run import load_run_model

    run_dir = Path(args.run)
    saved = torch.load(run_dir / "model.pt", weights_only=False)
    preset_root = run_dir.parents[4]
    data = Path(args.data) if args.data else _data_path(preset_root, saved["spec"]["task"])
    splits = load_splits(data)
    model = load_run_model(run_dir)
    for split in ("val", "test"):
        r = classify(model, *splits.split(split))
        print(f"{split}: accuracy {r['accuracy']:.2f}% top5 {r['top5']:.2f}% loss {r['loss']:.4f}")
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
