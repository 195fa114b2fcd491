"""The library's bucketed quantizers against their memory-bound floor, a ``torch.clone`` (design budget: 1.5x).

Run from the repository root::

    .venv/bin/python benchmarks/bench_quantizer.py                 # all rows, ~1 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_quantizer.py --no-compile    # skip torch.compile (no C++ compiler)
    .venv/bin/python benchmarks/bench_quantizer.py --record        # also save benchmarks/results/quantizer.json

On one 16M-element fp32 tensor (64 MB), 4 bits, buckets of 256, it times side by side in this process
(``torch.utils.benchmark.Timer.blocked_autorange``, medians, all CPU threads):

* ``torch.clone(x)`` (the floor: one read, one write, one fresh allocation), a copy into an existing
  buffer and a fill of fresh pages (what the floor is made of);
* ``qd.quant.quantize_uniform`` and ``eager_quantize_uniform`` of ``benchmarks/reference_quantizers.py``
  (the one-pass-per-step version it replaced);
* ``torch.fake_quantize_per_channel_affine`` on the ``(-1, 256)`` view (scale ``(max-min)/(2^b-1)``,
  zero point ``round(-min/scale)``), with and without computing the scales;
* ``torch.compile`` of the eager reference (compile time reported apart, excluded from the median);
* ``qd.quant.quantize_nonuniform`` with 16 quantile points (the DQ quantizer), forward and
  forward + backward;
* the two modern baselines' quantizers, forward + backward as in a training step: LSQ with a learned
  step per bucket (``qd.quantizers.lsq``, this library's autograd function and PyTorch's learnable op)
  and per-channel QAT (``qd.quantizers.per_channel``) on the ``(4096, 4096)`` view.

Then it profiles one call of each library quantizer (which ops, how much time) and checks that
``quantize_uniform`` is bit-exact with the eager reference. Ratios only: no timed assertions.
``--record`` saves the ratios to clone, the compile time and the exactness check as the record that
``benchmarks/README.md`` is generated from (``qd readme``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_quantizers import check_exact, describe_exactness, eager_quantize_uniform, print_profile  # noqa: E402

from qd.quant import CONSTANT_RANGE, quantile_points, quantize_nonuniform, quantize_uniform  # noqa: E402
from qd.quantizers.lsq import LSQQuantizer  # noqa: E402
from qd.quantizers.per_channel import PerChannelQuantizer  # noqa: E402

N = 16 * 2**20
BITS, BUCKET = 4, 256


def median_s(fn, min_run_time: float) -> float:
    timer = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def fake_quantize_inputs(x: torch.Tensor, bits: int, bucket: int):
    """Per-bucket scale and zero point for ``fake_quantize_per_channel_affine`` on the (-1, bucket) view."""
    b = x.view(-1, bucket)
    lo, hi = b.amin(dim=1), b.amax(dim=1)
    steps = 2**bits - 1
    scale = torch.where(hi - lo > CONSTANT_RANGE, (hi - lo) / steps, torch.ones_like(lo))
    zero_point = torch.round(-lo / scale).to(torch.int32)
    return b, scale, zero_point, steps


def fake_quantize(x: torch.Tensor, bits: int, bucket: int) -> torch.Tensor:
    b, scale, zero_point, steps = fake_quantize_inputs(x, bits, bucket)
    return torch.fake_quantize_per_channel_affine(b, scale, zero_point, 0, 0, steps).view(x.shape)


def differs(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"{(a != b).float().mean().item():.0%} of elements differ"


def nonuniform_step(x: torch.Tensor):
    """Forward and backward of the DQ quantizer with 16 learned points, as in one DQ training step."""
    points = quantile_points(x, 2**BITS, BUCKET).requires_grad_(True)
    grad = torch.randn_like(x)

    def step():
        points.grad = None
        quantize_nonuniform(x, points, BUCKET).backward(grad)

    return points, step


def training_step(quantizer, x: torch.Tensor):
    """Forward and backward of a fake quantizer with respect to the weight (and its learned steps)."""
    w = x.view(4096, -1).clone().requires_grad_(True)
    grad = torch.randn_like(w)

    def step():
        w.grad = None
        for p in getattr(quantizer, "parameters", lambda: [])():
            p.grad = None
        quantizer(w).backward(grad)

    return step


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--min-run-time", type=float, default=2.0, help="seconds per blocked_autorange")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--record", action="store_true", help="save benchmarks/results/quantizer.json (the README's)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(N)
    t = args.min_run_time
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, x: {N:,} fp32, {BITS} bits, bucket {BUCKET}")
    reference = eager_quantize_uniform(x, BITS, BUCKET)
    rows = []  # (name, median seconds, equal to the eager reference or a note)

    def add(name, fn, exact):
        rows.append((name, median_s(fn, t), exact))

    add("torch.clone(x)  [floor]", lambda: torch.clone(x), "-")
    buf = torch.empty_like(x)
    add("copy into an existing buffer", lambda: buf.copy_(x), "-")
    add("empty_like + fill (fresh pages)", lambda: torch.empty_like(x).fill_(1.0), "-")
    add("qd.quant.quantize_uniform", lambda: quantize_uniform(x, BITS, BUCKET),
        str(torch.equal(quantize_uniform(x, BITS, BUCKET), reference)))
    add("eager_quantize_uniform (reference)", lambda: eager_quantize_uniform(x, BITS, BUCKET), "reference")
    fq_args = fake_quantize_inputs(x, BITS, BUCKET)
    add("fake_quantize_per_channel (op only)",
        lambda: torch.fake_quantize_per_channel_affine(fq_args[0], fq_args[1], fq_args[2], 0, 0, fq_args[3]),
        f"no: other rounding, {differs(fake_quantize(x, BITS, BUCKET), reference)}")
    add("fake_quantize_per_channel (+ scales)", lambda: fake_quantize(x, BITS, BUCKET), "no")
    compile_note = compile_s = None
    if not args.no_compile:
        start = time.perf_counter()
        compiled = torch.compile(eager_quantize_uniform)
        out = compiled(x, BITS, BUCKET)
        compile_s = time.perf_counter() - start
        compile_note = f"torch.compile: first call (compile) {compile_s:.1f} s"
        exact = torch.equal(out, reference)
        add("torch.compile(eager reference)", lambda: compiled(x, BITS, BUCKET),
            "True" if exact else f"no: {differs(out, reference)} (by 1 ulp: lerp as mul + add)")
    points, dq_step = nonuniform_step(x)
    add("qd.quant.quantize_nonuniform, 16 points", lambda: quantize_nonuniform(x, points.detach(), BUCKET), "-")
    add("quantize_nonuniform forward + backward", dq_step, "-")
    for impl in ("autograd", "torch"):
        lsq = LSQQuantizer(x.view(4096, -1), BITS, "bucket", BUCKET, implementation=impl)
        add(f"LSQ per bucket ({impl}) fwd + bwd", training_step(lsq, x), "-")
    add("per-channel QAT (4096 rows) fwd + bwd", training_step(PerChannelQuantizer(BITS), x), "-")
    clone = rows[0][1]
    print(f"\n{'':40s} {'median ms':>10s} {'x clone':>8s}  equal to the eager reference")
    for name, s, exact in rows:
        print(f"{name:40s} {s * 1e3:10.1f} {s / clone:8.2f}  {exact}")
    if compile_note:
        print(compile_note)
    print("budget: the uniform quantizer within 1.5x of clone")
    print_profile("quantize_uniform", lambda: quantize_uniform(x, BITS, BUCKET))
    print_profile("quantize_nonuniform forward + backward", dq_step)
    mismatches = check_exact()
    print("\nquantize_uniform vs the eager reference on odd sizes, buckets None/1/7/64/100/256/1024, bits 1-16, "
          f"constant/inf/nan buckets, fp64/bf16, 1 and 2 threads: {describe_exactness(failures=mismatches)}")
    if args.record:
        from qd.report.benchmark import save_benchmark

        # every printed ratio is a row, so the README quotes none by hand; the budget is the uniform one's
        records = [{"what": f"torch.clone(x) of {N:,} fp32 elements (the floor)", "value": clone * 1e3,
                    "unit": "ms", "budget": None, "better": "lower", "digits": 1}]
        records += [{"what": f"{name} / clone", "value": s / clone, "unit": "x", "better": "lower", "digits": 2,
                     "budget": 1.5 if name == "qd.quant.quantize_uniform" else None} for name, s, _ in rows[1:]]
        if compile_s is not None:
            records.append({"what": "torch.compile first call (compile time, not in its median)",
                            "value": compile_s, "unit": "s", "budget": None, "better": "lower", "digits": 1})
        records.append({"what": "check_exact cases where quantize_uniform differs from the eager reference",
                        "value": len(mismatches), "unit": "", "budget": 0, "better": "lower", "digits": 0})
        save_benchmark('quantizer', __file__, argv, records)


if __name__ == "__main__":
    main()
