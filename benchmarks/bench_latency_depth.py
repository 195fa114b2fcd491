"""Inference latency against depth: ResNet-18, 2xResNet-18 and ResNet-34 (paper section 2.4's speed claim).

The paper timed the ImageNet test set on 4 GPUs: ResNet-34 263 s, ResNet-18 169 s, 2xResNet-18 169 s,
i.e. time grows with depth, not width, on a GPU with room to spare. On a CPU every multiply-add costs
time, so the 4x-FLOP 2xResNet-18 is expected to be much slower than ResNet-18 there. Run::

    .venv/bin/python benchmarks/bench_latency_depth.py                   # batch 1, 224x224, ~1 min
    .venv/bin/python benchmarks/bench_latency_depth.py --batch 8 --repeats 10
    .venv/bin/python benchmarks/bench_latency_depth.py --record     # also save benchmarks/results/latency_depth.json

Prints ``qd.latency.depth_comparison`` rows (median, IQR, time relative to ResNet-18) next to the
paper's ratios. Ratios only: no timed assertions. ``--record`` saves the measured ratios (no budget: the
claim is the paper's GPU measurement) as the record that ``benchmarks/README.md`` is generated from.
"""
from __future__ import annotations

import argparse

import torch

from qd.latency import depth_comparison
from qd.models.resnet import resnet

PAPER_RELATIVE = {"ResNet-18": 1.0, "2xResNet-18": 169 / 169, "ResNet-34": 263 / 169}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/latency_depth.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models = {"ResNet-18": resnet(18), "2xResNet-18": resnet(18, 2.0), "ResNet-34": resnet(34)}
    models = {k: m.to(args.device) for k, m in models.items()}
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    rows = depth_comparison(models, x, warmup=args.warmup, repeats=args.repeats)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.size}x{args.size}")
    print(f"{'model':12s} {'params':>10s} {'median ms':>10s} {'IQR ms':>8s} {'x ResNet-18':>12s} {'paper (4 GPUs)':>15s}")
    for r in rows:
        print(f"{r['model']:12s} {r['params']:10,d} {r['median_ms']:10.1f} {r['iqr_ms']:8.1f} "
              f"{r['relative_time']:12.2f} {PAPER_RELATIVE[r['model']]:15.2f}")
    if args.record:
        from qd.report.benchmark import save_benchmark

        setting = f"{args.device}, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads"
        records = [{"what": f"{r['model']} / ResNet-18 latency ({setting})", "value": r["relative_time"], "unit": "x",
                    "budget": None, "better": "lower", "digits": 2} for r in rows if r["model"] != "ResNet-18"]
        save_benchmark('latency_depth', __file__, argv, records)


if __name__ == "__main__":
    main()
