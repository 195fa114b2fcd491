"""Bucketed min-max quantization of weight tensors (paper section 2, notes 1.2-1.4).

A tensor is flattened and cut into consecutive *buckets* of ``bucket_size`` elements; each bucket is
scaled to [0, 1] by its own min and max, snapped to a grid of *levels* in [0, 1] and scaled back.
Uniform quantization uses the ``2**bits`` evenly spaced levels ``k / (2**bits - 1)``; non-uniform
quantization uses given sorted *points*. Every function here is vectorised over buckets.

Exercise it with ``pytest tests/test_quant.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# A bucket whose range is below this is treated as constant (the official code's threshold):
# scaling divides by 1 instead of ~0, so every element lands on level 0 and decodes to the min.
CONSTANT_RANGE = 1e-10


@dataclass
class QuantCodes:
    """A quantized tensor as stored: level indices, per-bucket min and range, and the level grid.

    ``decode(codes)`` rebuilds exactly the tensor the quantizer returned.
    """

    indices: torch.Tensor  # int64, flattened, unpadded: one level index per element
    lo: torch.Tensor  # (n_buckets,) bucket minimum
    hi: torch.Tensor  # (n_buckets,) bucket maximum
    grid: torch.Tensor  # (n_levels,) level positions in [0, 1]
    bucket_size: int | None
    shape: tuple[int, ...]
    uniform: bool

    @property
    def rng(self) -> torch.Tensor:
        return self.hi - self.lo

    @property
    def n_buckets(self) -> int:
        return self.lo.numel()

    @property
    def n_levels(self) -> int:
        return self.grid.numel()


def uniform_grid(bits: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The ``2**bits`` evenly spaced levels of [0, 1], min and max included."""
    check_bits(bits)
    steps = 2**bits - 1
    return torch.arange(2**bits, dtype=dtype, device=device) / steps


def check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an integer in 1..16, got {bits!r}")


def to_buckets(x: torch.Tensor, bucket_size: int | None) -> torch.Tensor:
    """Flatten ``x`` into rows of ``bucket_size``; the last bucket is padded with the last element.

    Padding with a copy of the last element leaves that bucket's min and max unchanged, so a short last
    bucket is scaled by the min and max of its own elements. ``None`` makes the tensor one bucket.
    """
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        return flat.view(0, 1)
    if bucket_size is None:
        return flat.view(1, n)
    if bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size!r}")
    pad = (-n) % bucket_size
    if pad:
        flat = torch.cat([flat, flat[-1:].expand(pad)])
    return flat.view(-1, bucket_size)


def from_buckets(b: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Drop the padding added by :func:`to_buckets` and restore ``like``'s shape."""
    return b.reshape(-1)[: like.numel()].view(like.shape)


def bucket_scaling(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bucket ``lo`` (min), ``hi`` (max) and the divisor used for scaling to [0, 1]."""
    # amin + amax: the same exact values as aminmax(dim=1), about ten times faster over rows on CPU
    lo, hi = b.amin(dim=1, keepdim=True), b.amax(dim=1, keepdim=True)
    rng = hi - lo
    divisor = torch.where(rng > CONSTANT_RANGE, rng, torch.ones_like(rng))
    return lo, hi, divisor


def dequantize(lo: torch.Tensor, hi: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``sc^-1``: level positions in [0, 1] back to weights (the one formula every path uses).

    ``lerp`` is exact at both ends (position 0 gives the min, 1 the max), which ``lo + rng * p``
    is not: ``lo + (hi - lo)`` is often one ulp off ``hi``.
    """
    return torch.lerp(lo, hi, positions)


def _uniform_levels(b: torch.Tensor, bits: int, stochastic: bool, generator) -> tuple:
    lo, hi, divisor = bucket_scaling(b)
    steps = 2**bits - 1
    u = (b - lo) / divisor * steps
    if stochastic:
        # floor, then +1 with probability equal to the fractional part: E[level] = u (unbiased)
        floor = torch.floor(u)
        noise = torch.rand(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        levels = floor + (noise < (u - floor)).to(u.dtype)
    else:
        # round half up; torch.round would round half to even
        levels = torch.floor(u + 0.5)
    return levels.clamp_(0, steps), lo, hi


def quantize_uniform(
    x: torch.Tensor,
    bits: int,
    bucket_size: int | None = 256,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform quantization ``Q(v, s)`` with ``s = 2**bits`` levels per bucket (paper eq. for Q-hat).

    Same shape and dtype as ``x``. Deterministic rounding is round-to-nearest (ties up); stochastic
    rounding is unbiased and draws from ``generator``. A constant bucket is returned unchanged.
    """
    check_bits(bits)
    if x.numel() == 0:
        return x.clone()
    if not stochastic:
        return _uniform_blocked(x, bits, bucket_size)
    b = to_buckets(x.detach(), bucket_size)
    levels, lo, hi = _uniform_levels(b, bits, stochastic, generator)
    out = dequantize(lo, hi, levels / (2**bits - 1))
    return from_buckets(out, x)


# Deterministic uniform quantization, block by block. The steps of _uniform_levels and dequantize run
# in the same order (so with the same roundings) but in place on cache-sized blocks of whole buckets,
# into one output allocation: on a CPU each fresh tensor the size of a weight costs a round of page
# faults, which made the one-pass-per-step version ~9x a clone of the tensor (benchmarks/README.md).
BLOCK_ELEMENTS = 1 << 19  # 2 MB of fp32
# lerp takes its vectorised path over whole rows when their length is a multiple of the widest
# vector step (2 x 16 floats); only then do contiguous copies of lo and hi give the broadcast result
_VECTOR_STEP = 32


def _quantize_block(src: torch.Tensor, dst: torch.Tensor, steps: int, lo_buf, hi_buf) -> None:
    lo, hi, divisor = bucket_scaling(src)
    torch.sub(src, lo, out=dst)
    dst.div_(divisor).mul_(steps).add_(0.5).floor_().clamp_(0, steps).div_(steps)
    if lo_buf is not None:  # contiguous operands: lerp runs ~4x faster than with broadcast ones
        m = src.shape[0]
        lo = lo_buf[:m].copy_(lo.expand_as(src))
        hi = hi_buf[:m].copy_(hi.expand_as(src))
    torch.lerp(lo, hi, dst, out=dst)


def _uniform_blocked(x: torch.Tensor, bits: int, bucket_size: int | None) -> torch.Tensor:
    if bucket_size is not None and bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size!r}")
    flat = x.detach().reshape(-1)
    n = flat.numel()
    d = n if bucket_size is None else bucket_size
    n_rows = -(-n // d)
    rows = max(1, BLOCK_ELEMENTS // d)
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    expand = d % _VECTOR_STEP == 0
    lo_buf = torch.empty(min(rows, n_rows), d, dtype=x.dtype, device=x.device) if expand else None
    hi_buf = torch.empty_like(lo_buf) if expand else None
    steps = 2**bits - 1
    for r0 in range(0, n_rows, rows):
        r1 = min(r0 + rows, n_rows)
        if r1 * d <= n:
            _quantize_block(flat[r0 * d:r1 * d].view(-1, d), out[r0 * d:r1 * d].view(-1, d), steps, lo_buf, hi_buf)
        else:  # the block with the short last bucket, padded with its last element as to_buckets does
            src = torch.cat([flat[r0 * d:], flat[-1:].expand(r1 * d - n)]).view(-1, d)
            dst = torch.empty_like(src)
            _quantize_block(src, dst, steps, lo_buf, hi_buf)
            out[r0 * d:] = dst.reshape(-1)[:n - r0 * d]
    return out.view(x.shape)


def encode_uniform(
    x: torch.Tensor,
    bits: int,
    bucket_size: int | None = 256,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> QuantCodes:
    """Level indices and bucket scales of :func:`quantize_uniform` (``decode`` gives the same tensor)."""
    check_bits(bits)
    b = to_buckets(x.detach(), bucket_size)
    levels, lo, hi = _uniform_levels(b, bits, stochastic, generator)
    return QuantCodes(
        indices=levels.reshape(-1)[: x.numel()].long(),
        lo=lo.reshape(-1),
        hi=hi.reshape(-1),
        grid=uniform_grid(bits, dtype=x.dtype, device=x.device),
        bucket_size=bucket_size,
        shape=tuple(x.shape),
        uniform=True,
    )


def nearest_point(u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``points`` for each scaled value (decision at midpoints)."""
    midpoints = (points[1:] + points[:-1]) / 2
    return torch.bucketize(u, midpoints.detach())


def _nonuniform_assign(b: torch.Tensor, points: torch.Tensor):
    lo, hi, divisor = bucket_scaling(b)
    return nearest_point((b - lo) / divisor, points.detach()), lo, hi


class _NonUniformQuantize(torch.autograd.Function):
    """``Q(v, p)`` forward; backward: the paper's point gradient, and the identity for ``x``."""

    @staticmethod
    def forward(ctx, x, points, bucket_size):
        b = to_buckets(x.detach(), bucket_size)
        idx, lo, hi = _nonuniform_assign(b, points)
        ctx.save_for_backward(idx, hi - lo)
        ctx.n, ctx.n_points = x.numel(), points.numel()
        return from_buckets(dequantize(lo, hi, points.detach()[idx]), x)

    @staticmethod
    def backward(ctx, grad):
        idx, rng = ctx.saved_tensors
        # dQ_i/dp_j = range of i's bucket when i is assigned to p_j; padding gets no gradient.
        # scatter_add_ sums ~20x faster on CPU than autograd's index_put_(accumulate=True).
        contribution = (to_buckets(grad, idx.shape[1]) * rng).reshape(-1)[: ctx.n]
        grad_points = torch.zeros(ctx.n_points, dtype=grad.dtype, device=grad.device)
        grad_points.scatter_add_(0, idx.reshape(-1)[: ctx.n], contribution)
        return (grad if ctx.needs_input_grad[0] else None), grad_points, None


def quantize_nonuniform(x: torch.Tensor, points: torch.Tensor, bucket_size: int | None = 256) -> torch.Tensor:
    """Non-uniform quantization ``Q(v, p)``: each scaled element goes to the nearest of ``points``.

    Differentiable with respect to ``points``: dL/dp_j = sum over the elements assigned to j of
    (dL/dQ_i * bucket range), the paper's gradient (assignments held fixed). Where ``x`` requires grad
    it receives the straight-through gradient (identity).
    """
    if x.numel() == 0:
        return x.clone()
    return _NonUniformQuantize.apply(x, points, bucket_size)


def encode_nonuniform(x: torch.Tensor, points: torch.Tensor, bucket_size: int | None = 256) -> QuantCodes:
    """Point indices and bucket scales of :func:`quantize_nonuniform`."""
    b = to_buckets(x.detach(), bucket_size)
    idx, lo, hi = _nonuniform_assign(b, points)
    return QuantCodes(
        indices=idx.reshape(-1)[: x.numel()],
        lo=lo.reshape(-1),
        hi=hi.reshape(-1),
        grid=points.detach().clone(),
        bucket_size=bucket_size,
        shape=tuple(x.shape),
        uniform=False,
    )


def decode(codes: QuantCodes) -> torch.Tensor:
    """The quantized tensor that ``codes`` describe."""
    n = codes.indices.numel()
    d = codes.bucket_size if codes.bucket_size is not None else max(n, 1)
    positions = codes.grid[codes.indices]
    pad = (-n) % d
    if pad:
        positions = torch.cat([positions, positions[-1:].expand(pad)])
    b = positions.view(-1, d)
    out = dequantize(codes.lo.view(-1, 1), codes.hi.view(-1, 1), b)
    return out.reshape(-1)[:n].view(codes.shape)


def quantile_points(x: torch.Tensor, n_points: int, bucket_size: int | None = 256) -> torch.Tensor:
    """Quantile initialisation: points at the percentiles ``linspace(0, 100, n)`` of the scaled values.

    Every point is then used by some weight; the first and last points are 0 and 1 exactly.
    (Linear interpolation between order statistics, as ``numpy.percentile``; sorting avoids the
    16M-element limit of ``torch.quantile``.)
    """
    b = to_buckets(x.detach(), bucket_size)
    lo, _, divisor = bucket_scaling(b)
    u = ((b - lo) / divisor).reshape(-1)[: x.numel()]
    s = torch.sort(u).values
    pos = torch.linspace(0, s.numel() - 1, n_points, dtype=torch.float64)
    below = pos.floor().long()
    above = pos.ceil().long()
    frac = (pos - below).to(s.dtype)
    return s[below] + (s[above] - s[below]) * frac


def uniform_points(n_points: int, dtype=torch.float32) -> torch.Tensor:
    """Uniform initialisation of ``n_points`` points: ``k / (n - 1)``."""
    if n_points == 1:
        return torch.zeros(1, dtype=dtype)
    return torch.arange(n_points, dtype=dtype) / (n_points - 1)
