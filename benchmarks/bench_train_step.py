"""One quantized-distillation (QD) step against one full-precision distillation step, and DQ against QD.

Design budgets: a QD step within 1.10x of an FP distillation step of the same student and batch; a
differentiable-quantization (DQ) step within 1.5x of a QD step. Run from the repository root::

    .venv/bin/python benchmarks/bench_train_step.py              # both models, ~8 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_train_step.py --only cifar
    .venv/bin/python benchmarks/bench_train_step.py --only translation --no-profile
    .venv/bin/python benchmarks/bench_train_step.py --record    # also save benchmarks/results/train_step.json

Every step is forward, distillation loss, backward and an SGD (momentum 0.9) update. The teacher's
logits are precomputed once per batch and shared by all steps, so the ratios compare student steps
only (a teacher forward would add the same time to each and shrink the ratios).

* ``fp``: ``model(x)``, the plain FP distillation step;
* ``qd``: ``qd.ste.quantized_forward`` with the library's ``UniformQuantizer(4, 256)`` on every
  parameter (Algorithm 1);
* ``dq``: the weights frozen, 16 learned points per tensor (quantile init), the library's
  ``quantize_nonuniform`` through ``substituted_forward`` and the points re-sorted after the step
  (``qd/methods/differentiable_quantization.py``).

Models: (i) the CIFAR-10 conv net student 1 (1.0M parameters), 32x32x3 inputs, batch 25 and 128;
(ii) a translation-sized stand-in whose parameters are mostly embeddings: source and target
``Embedding(50000, 500)``, a 1-layer LSTM (hidden 512) run over the source then the target, and a
``Linear(512, 50000)`` output layer (77.7M parameters), batch 64 x 30 tokens.

Steps run in interleaved rounds (fp, qd, ..., fp, qd, ...) and each ratio is the median of the
per-round ratios, so load from other processes hits all variants alike. Where a budget is missed,
``torch.profiler`` shows which ops take the time. Ratios only: no timed assertions. ``--record`` saves
the ratios and their budgets as the record that ``benchmarks/README.md`` is generated from (``qd readme``).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.benchmark import Timer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_quantizers import print_profile  # noqa: E402

from qd.distill import distillation_loss  # noqa: E402
from qd.models.convnet import convnet  # noqa: E402
from qd.quant import quantile_points, quantize_nonuniform  # noqa: E402
from qd.ste import UniformQuantizer, quantized_forward, substituted_forward  # noqa: E402

TEMPERATURE, WEIGHT = 2.0, 0.7
BITS, BUCKET = 4, 256
RATIO_WHAT = {"qd / fp": "QD step / FP distillation step", "dq / qd": "DQ step / QD step"}


class TranslationStandIn(nn.Module):
    """Embedding-heavy seq2seq shape: encode the source with the LSTM, decode the target from its state."""

    def __init__(self, vocab: int = 50_000, embed: int = 500, hidden: int = 512):
        super().__init__()
        self.src_embed = nn.Embedding(vocab, embed)
        self.tgt_embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, src, tgt):
        _, state = self.lstm(self.src_embed(src))
        h, _ = self.lstm(self.tgt_embed(tgt), state)
        return self.out(h)


def loss_of(logits, teacher, y):
    return distillation_loss(logits, teacher, y, TEMPERATURE, WEIGHT, "batchmean")


def fp_step(model, inputs, teacher, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(model(*inputs), teacher, y).backward()
        opt.step()

    return step


def qd_step(model, inputs, teacher, y, quantizer):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    quantizers = {name: quantizer for name, _ in model.named_parameters()}

    def step():
        opt.zero_grad(set_to_none=True)
        loss_of(quantized_forward(model, quantizers, *inputs), teacher, y).backward()
        opt.step()

    return step


def dq_step(model, inputs, teacher, y):
    for p in model.parameters():
        p.requires_grad_(False)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    points = {n: nn.Parameter(quantile_points(w, 2**BITS, BUCKET)) for n, w in weights.items()}
    opt = torch.optim.SGD(points.values(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        quantized = {n: quantize_nonuniform(weights[n], p, BUCKET) for n, p in points.items()}
        loss_of(substituted_forward(model, quantized, *inputs), teacher, y).backward()
        opt.step()
        with torch.no_grad():
            for p in points.values():
                p.copy_(torch.sort(p).values)

    return step


def side_by_side(steps: dict, rounds: int, min_run_time: float | None) -> dict:
    """Seconds per step of each variant in each of the interleaved rounds.

    ``min_run_time=None`` times a single step per round (for steps that take seconds).
    """
    times = {name: [] for name in steps}
    for name, fn in steps.items():  # warm-up: first-call allocations, lazy init
        fn()
    for _ in range(rounds):
        for name, fn in steps.items():
            timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
            m = timer.timeit(1) if min_run_time is None else timer.blocked_autorange(min_run_time=min_run_time)
            times[name].append(m.median)
    return times


def ratio(times: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def report(title: str, times: dict, profile_steps: dict | None) -> list[tuple]:
    print(f"\n{title}")
    for name, ts in times.items():
        print(f"  {name:12s} median {statistics.median(ts) * 1e3:9.1f} ms per step over {len(ts)} rounds")
    rows = [("qd / fp", ratio(times, "qd", "fp"), 1.10),
            ("dq / qd", ratio(times, "dq", "qd"), 1.5)]
    for label, r, budget in rows:
        print(f"  {label:8s} {r:6.2f}   budget {budget:.2f}  {'ok' if r <= budget else 'MISSED'}")
    if profile_steps:
        for label, r, budget in rows:
            if r > budget:
                name = label.split(" /")[0]
                print_profile(f"{name} step", profile_steps[name])
    return rows


def cifar(batch: int, rounds: int, min_run_time: float | None, profile: bool) -> list[tuple]:
    torch.manual_seed(0)
    base = convnet("student1").train()
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    teacher = torch.randn(batch, 10)
    steps = {
        "fp": fp_step(copy.deepcopy(base), (x,), teacher, y),
        "qd": qd_step(copy.deepcopy(base), (x,), teacher, y, UniformQuantizer(BITS, BUCKET)),
        "dq": dq_step(copy.deepcopy(base), (x,), teacher, y),
    }
    times = side_by_side(steps, rounds, min_run_time)
    return report(f"(i) CIFAR-10 conv net student 1, batch {batch}", times, steps if profile else None)


def translation(rounds: int, min_run_time: float | None, profile: bool) -> list[tuple]:
    torch.manual_seed(0)
    base = TranslationStandIn().train()
    src, tgt = torch.randint(0, 50_000, (64, 30)), torch.randint(0, 50_000, (64, 30))
    y = torch.randint(0, 50_000, (64, 30))
    teacher = torch.randn(64, 30, 50_000)
    steps = {
        "fp": fp_step(copy.deepcopy(base), (src, tgt), teacher, y),
        "qd": qd_step(copy.deepcopy(base), (src, tgt), teacher, y, UniformQuantizer(BITS, BUCKET)),
        "dq": dq_step(copy.deepcopy(base), (src, tgt), teacher, y),
    }
    times = side_by_side(steps, rounds, min_run_time)
    n = sum(p.numel() for p in base.parameters())
    return report(f"(ii) translation stand-in ({n / 1e6:.1f}M parameters), batch 64 x 30 tokens", times,
                  steps if profile else None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("cifar", "translation"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/train_step.json (the README's)")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; teacher logits precomputed")
    measured = []  # (model and batch, ratio label, ratio, budget)
    if args.only in (None, "cifar"):
        for batch in (25, 128):
            rows = cifar(batch, args.rounds, 0.5, not args.no_profile)
            measured += [(f"CIFAR student 1, batch {batch}", *row) for row in rows]
    if args.only in (None, "translation"):
        rows = translation(args.rounds, None, not args.no_profile)  # one step per timing: a step takes seconds
        measured += [("translation stand-in, batch 64 x 30 tokens", *row) for row in rows]
    if args.record:
        from qd.report.benchmark import save_benchmark

        records = [{"what": f"{RATIO_WHAT[label]}, {model}", "value": r, "unit": "x", "budget": budget,
                    "better": "lower", "digits": 2} for model, label, r, budget in measured]
        save_benchmark('train_step', __file__, argv, records)


if __name__ == "__main__":
    main()
