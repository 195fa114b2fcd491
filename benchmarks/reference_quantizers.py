"""The one-pass-per-step uniform quantizer that ``qd.quant.quantize_uniform`` replaced, kept as the baseline.

``eager_quantize_uniform`` is the deterministic-rounding quantizer as it was written before the library
moved to blocked in-place passes: every step over the whole tensor, each into a fresh tensor
(``to_buckets``, ``aminmax``, ``(b - lo) / divisor * steps``, ``floor(+ 0.5)``, ``clamp``,
``/ steps``, ``lerp`` through ``qd.quant.dequantize``, ``from_buckets``). The benchmarks time the
library against it, and :func:`check_exact` checks that the library still gives its values bit for
bit. Run ``.venv/bin/python benchmarks/reference_quantizers.py`` for the exactness check alone.
"""
from __future__ import annotations

import torch

from qd.quant import CONSTANT_RANGE, check_bits, dequantize, from_buckets, quantize_uniform, to_buckets


def eager_quantize_uniform(x: torch.Tensor, bits: int, bucket_size: int | None = 256) -> torch.Tensor:
    """Deterministic ``Q(v, s)``, one pass over the tensor per step (the pre-blocked library version)."""
    check_bits(bits)
    if x.numel() == 0:
        return x.clone()
    b = to_buckets(x.detach(), bucket_size)
    lo, hi = torch.aminmax(b, dim=1, keepdim=True)
    rng = hi - lo
    divisor = torch.where(rng > CONSTANT_RANGE, rng, torch.ones_like(rng))
    steps = 2**bits - 1
    levels = torch.floor((b - lo) / divisor * steps + 0.5).clamp_(0, steps)
    return from_buckets(dequantize(lo, hi, levels / steps), x)


def _cases():
    g = torch.Generator().manual_seed(0)
    for n in (1, 31, 255, 256, 257, 1000, 65_537, 1_000_003):
        yield f"randn({n})", torch.randn(n, generator=g)
    yield "conv 64x3x7x7", torch.randn(64, 3, 7, 7, generator=g)
    yield "constant buckets", torch.cat([torch.full((512,), 0.3), torch.randn(300, generator=g)])
    yield "tiny ranges", 5 + 1e-12 * torch.randn(1000, generator=g)
    yield "inf and nan", torch.tensor([1.0, float("inf"), -2.0, float("nan")] * 100)
    yield "float64", torch.randn(5000, dtype=torch.float64, generator=g)
    yield "bfloat16", torch.randn(5000, generator=g).bfloat16()
    yield "non-contiguous", torch.randn(300, 200, generator=g).t()


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """``torch.equal`` that counts NaN as equal to NaN in the same place."""
    return got.shape == want.shape and torch.equal(got.isnan(), want.isnan()) \
        and torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))


def check_exact(quantizer=quantize_uniform, bits_list=(1, 2, 3, 4, 8, 16),
                buckets=(None, 1, 7, 64, 100, 256, 1024), threads=(1, 2)) -> list[str]:
    """Cases where ``quantizer`` differs from :func:`eager_quantize_uniform` (empty: bit-exact)."""
    failures = []
    before = torch.get_num_threads()
    try:
        for t in threads:
            torch.set_num_threads(t)
            for name, x in _cases():
                for bits in bits_list:
                    for d in buckets:
                        if not _same(quantizer(x, bits, d), eager_quantize_uniform(x, bits, d)):
                            failures.append(f"{name} bits={bits} bucket={d} threads={t}")
    finally:
        torch.set_num_threads(before)
    return failures


def describe_exactness(quantizer=quantize_uniform, failures: list[str] | None = None) -> str:
    """:func:`check_exact` in words; ``failures``: its result where the caller already has it (it takes seconds)."""
    bad = check_exact(quantizer) if failures is None else failures
    return "bit-exact on every case" if not bad else f"{len(bad)} mismatches, e.g. {bad[:3]}"


if __name__ == "__main__":
    print(f"qd.quant.quantize_uniform vs eager_quantize_uniform: {describe_exactness()}")


def print_profile(label: str, fn, top: int = 8) -> None:
    """Which aten ops one call of ``fn`` runs, with their share of its CPU time."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted((e for e in prof.key_averages() if e.key.startswith("aten::")),
                    key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nprofile of one {label} (aten self CPU time, {total / 1e3:.0f} ms in all):")
    for e in events[:top]:
        print(f"  {e.key:40s} calls {e.count:4d}  {e.self_cpu_time_total / 1e3:8.1f} ms "
              f"({e.self_cpu_time_total / total:4.0%})")
