"""The CIFAR-10 conv nets' training speed on a CPU: each speed switch of a run's recipe as a ratio.

Models: the paper's student 3 (111,935 parameters, its dropout) and the paper's teacher at half width
(1.34M parameters, the ``cifar10-cpu`` preset's), both from ``qd.models``, on random 32x32x3 batches.
A *chunk* is ``--steps`` training steps (forward, cross-entropy, backward, SGD Nesterov 0.9) on one
fixed batch. Run from the repository root::

    .venv/bin/python benchmarks/bench_conv_speed.py              # both models, the jobs side by side
    .venv/bin/python benchmarks/bench_conv_speed.py --only student3 --rounds 3
    .venv/bin/python benchmarks/bench_conv_speed.py --quick      # checks that it runs (a few minutes: the
                                                                 # compiles); its numbers mean nothing
    .venv/bin/python benchmarks/bench_conv_speed.py --record     # also save benchmarks/results/conv_speed.json

**Switches** (``train.channels_last``, ``train.compile``, ``train.autocast``), set up by the code runs
use (``qd.methods.contract.speed_up``, ``qd.train.mixed_precision``) and timed side by side in one
process, in interleaved rounds, each ratio the median of the per-round ratios (as
``bench_train_step.py``): contiguous vs channels_last, eager vs ``torch.compile``, fp32 vs bf16
autocast, and their combinations, each a chunk's time over the plain chunk's (eager, contiguous,
fp32). For student 3 also the quantized-distillation step (Algorithm 1 through ``qd.ste``, 2 bits,
buckets of 256) plain and with channels_last + compile, over the plain full-precision step. The first
compiled chunk's time (the compile) is printed and recorded apart, not in any ratio.

**Jobs side by side**: two processes of one thread each, each running chunks of the plain step of
the same model, against one process of two threads; the ratio is the two processes' summed
throughput over the one process's (above 1: two single-thread jobs side by side get more done, the
way the ``cifar10-cpu`` preset trains its students). Each process builds its model and warms up
before a common start, so imports and first calls are not timed.

Ratios only: no timed assertions. ``--record`` saves the ratios (no budgets: the issue keeps what pays).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qd.methods.contract import speed_up
from qd.models.convnet import convnet
from qd.ste import UniformQuantizer, quantized_forward
from qd.train import mixed_precision

# name -> the recipe's train-block switches (the plain chunk first: every ratio is over it)
VARIANTS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16": {"autocast": "bf16"},
    "channels_last + compile": {"channels_last": True, "compile": True},
    "channels_last + bf16": {"channels_last": True, "autocast": "bf16"},
    "channels_last + compile + bf16": {"channels_last": True, "compile": True, "autocast": "bf16"},
}
MODELS = {"student3": {"width": 1.0}, "teacher": {"width": 0.5}}  # teacher: the cifar10-cpu preset's half width
QD_BITS, QD_BUCKET = 2, 256


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return convnet(name, width=MODELS[name]["width"]).train()


def chunk(model: torch.nn.Module, switches: dict, batch: int, steps: int, quantized: bool = False):
    """A closure running ``steps`` training steps of ``model`` set up as ``switches`` ask."""
    speed_up(model, switches)
    forward = model
    if quantized:
        q = UniformQuantizer(QD_BITS, QD_BUCKET)
        quantizers = {n: q for n, _ in model.named_parameters()}
        forward = lambda x: quantized_forward(model, quantizers, x)  # noqa: E731
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(batch, 3, 32, 32, generator=gen), torch.randint(0, 10, (batch,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    precision = mixed_precision(switches, torch.device("cpu"))

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            with precision:
                loss = F.cross_entropy(forward(x), y)
            loss.backward()
            opt.step()

    return run


def side_by_side(chunks: dict, rounds: int) -> tuple[dict, dict]:
    """Seconds per chunk of each variant in each interleaved round, and each one's first call (warm-up,
    which for a compiled variant is the compile)."""
    first, times = {}, {name: [] for name in chunks}
    for name, fn in chunks.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    for _ in range(rounds):
        for name, fn in chunks.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times, first


def ratio(times: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def switches_table(name: str, batch: int, steps: int, rounds: int, variants: dict) -> list[dict]:
    base = build(name)
    chunks = {v: chunk(copy.deepcopy(base), s, batch, steps) for v, s in variants.items()}
    if name == "student3":
        chunks["qd"] = chunk(copy.deepcopy(base), {}, batch, steps, quantized=True)
        chunks["qd, channels_last + compile"] = chunk(copy.deepcopy(base), VARIANTS["channels_last + compile"],
                                                      batch, steps, quantized=True)
    times, first = side_by_side(chunks, rounds)
    print(f"\n{name} ({sum(p.numel() for p in base.parameters()):,} parameters), batch {batch}, "
          f"{steps} steps a chunk, {torch.get_num_threads()} thread(s), {rounds} rounds")
    rows = []
    for v, ts in times.items():
        r = ratio(times, v, "plain")
        print(f"  {v:32s} {statistics.median(ts) / steps * 1e3:8.1f} ms a step  {r:5.2f}x plain  "
              f"(first chunk {first[v]:.1f} s)")
        if v != "plain":
            rows.append({"what": f"{name}, {v} / plain step, batch {batch}, {torch.get_num_threads()} thread(s)",
                         "value": r, "unit": "x", "better": "lower", "digits": 2})
        if "compile" in v:
            rows.append({"what": f"{name}, {v}: first chunk (compile included)", "value": first[v], "unit": "s",
                         "better": "lower", "digits": 1})
    return rows


# ------------------------------------------------------------------ two 1-thread jobs vs one 2-thread job


def worker(name: str, threads: int, batch: int, steps: int, chunks: int) -> None:
    """One job: warm up, say 'ready', wait for 'go' on stdin, run ``chunks`` chunks, print steps per second."""
    torch.set_num_threads(threads)
    run = chunk(build(name), {}, batch, steps)
    for _ in range(3):  # first calls: allocations, oneDNN's kernel choice, the thread pool
        run()
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    for _ in range(chunks):
        run()
    print(json.dumps({"steps_per_s": chunks * steps / (time.perf_counter() - t0)}), flush=True)


def jobs_throughput(name: str, threads: int, jobs: int, batch: int, steps: int, chunks: int) -> float:
    """Summed steps per second of ``jobs`` processes of ``threads`` threads each, started together."""
    cmd = [sys.executable, __file__, "--worker", name, "--threads", str(threads), "--batch", str(batch),
           "--steps", str(steps), "--chunks", str(chunks)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(jobs)]
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"benchmark worker for {name} did not start: {line!r}")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    rates = [json.loads(p.communicate()[0])["steps_per_s"] for p in procs]
    for p in procs:
        if p.returncode:
            raise RuntimeError(f"benchmark worker for {name} exited with {p.returncode}")
    return sum(rates)


def jobs_table(name: str, batch: int, steps: int, chunks: int, rounds: int) -> list[dict]:
    """Two 1-thread jobs / one 2-thread job, in rounds alternating the two setups."""
    two_single, one_double = [], []
    for _ in range(rounds):
        two_single.append(jobs_throughput(name, 1, 2, batch, steps, chunks))
        one_double.append(jobs_throughput(name, 2, 1, batch, steps, chunks))
    r = statistics.median(a / b for a, b in zip(two_single, one_double))
    print(f"\n{name}, batch {batch}: two 1-thread jobs {statistics.median(two_single):.2f} steps/s, one 2-thread "
          f"job {statistics.median(one_double):.2f} steps/s: {r:.2f}x throughput side by side")
    return [{"what": f"{name}, two 1-thread jobs / one 2-thread job, throughput, batch {batch}", "value": r,
             "unit": "x", "better": "higher", "digits": 2}]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=tuple(MODELS))
    ap.add_argument("--batch", type=int, default=128, help="the cifar10-cpu preset's batch")
    ap.add_argument("--steps", type=int, default=10, help="training steps a chunk")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="threads of the switches' process (the students' 1)")
    ap.add_argument("--chunks", type=int, default=5, help="chunks each side-by-side job runs")
    ap.add_argument("--quick", action="store_true", help="check that it runs: tiny batch, one round, no record")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/conv_speed.json")
    ap.add_argument("--worker", choices=tuple(MODELS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads, args.batch, args.steps, args.chunks)
    if args.quick and args.record:
        ap.error("--quick numbers are not a record: drop --record")
    if args.quick:
        args.batch, args.steps, args.rounds, args.chunks = 8, 1, 1, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s) for the switches")
    rows = []
    for name in MODELS:
        if args.only in (None, name):
            rows += switches_table(name, args.batch, args.steps, args.rounds, VARIANTS)
    for name in MODELS:
        if args.only in (None, name):
            rows += jobs_table(name, args.batch, args.steps, args.chunks, 1 if args.quick else 3)
    if args.record:
        from qd.report.benchmark import save_benchmark

        save_benchmark("conv_speed", __file__, argv, rows)


if __name__ == "__main__":
    main()
