"""Bucketed min-max quantization of weight tensors (paper section 2, notes 1.2-1.4).

A tensor is flattened and cut into consecutive *buckets* of ``bucket_size`` elements; each bucket is
scaled to [0, 1] by its own min and max, snapped to a grid of *levels* in [0, 1] and scaled back.
Uniform quantization uses the ``2**bits`` evenly spaced levels ``k / (2**bits - 1)``; non-uniform
quantization uses given sorted *points*. Every function here is vectorised over buckets. Their codes
are ``minmax`` codes (``QuantCodes``, ``decode``: ``qd.quantizers.layouts``, re-exported here).

Exercise it with ``pytest tests/test_quant.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

# the codes and their decoding live with the other layouts; imported here, where they always were
from qd.quantizers.layouts import MINMAX, QuantCodes, decode, dequantize  # noqa: F401 (re-exported)

# A bucket whose range is below this is treated as constant (the official code's threshold):
# scaling divides by 1 instead of ~0, so every element lands on level 0 and decodes to the min.
CONSTANT_RANGE = 1e-10


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
    if not stochastic and x.numel() >= _BLOCKED_MIN_ELEMENTS:
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
# below this the blocked loop's fixed cost (buffers, per-block calls) exceeds the page faults it saves
_BLOCKED_MIN_ELEMENTS = 1 << 15
# lerp takes its vectorised path over whole rows when their length is a multiple of the widest
# vector step (2 x 16 floats); only then do contiguous copies of lo and hi give the broadcast result
_VECTOR_STEP = 32


@dataclass
class _Blocks:
    """A flat tensor cut into blocks of whole buckets of ``d`` elements, with the lerp scratch buffers."""

    flat: torch.Tensor
    d: int
    rows: int  # buckets per block
    n_rows: int  # buckets in all
    lo_buf: torch.Tensor | None
    hi_buf: torch.Tensor | None

    @property
    def n(self) -> int:
        return self.flat.numel()

    def __iter__(self):
        """``(first bucket, end bucket, source block)``; the block holding a short last bucket is padded
        with the tensor's last element, as :func:`to_buckets` does."""
        n, d = self.n, self.d
        for r0 in range(0, self.n_rows, self.rows):
            r1 = min(r0 + self.rows, self.n_rows)
            if r1 * d <= n:
                yield r0, r1, self.flat[r0 * d:r1 * d].view(-1, d)
            else:
                yield r0, r1, torch.cat([self.flat[r0 * d:], self.flat[-1:].expand(r1 * d - n)]).view(-1, d)

    def dense(self, lo: torch.Tensor, hi: torch.Tensor, src: torch.Tensor):
        """``lo``, ``hi`` as contiguous copies the size of ``src`` where lerp then runs ~4x faster."""
        if self.lo_buf is None:
            return lo, hi
        m = src.shape[0]
        return self.lo_buf[:m].copy_(lo.expand_as(src)), self.hi_buf[:m].copy_(hi.expand_as(src))


def _blocks(x: torch.Tensor, bucket_size: int | None) -> _Blocks:
    if bucket_size is not None and bucket_size < 1:
        raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size!r}")
    flat = x.detach().reshape(-1)
    d = flat.numel() if bucket_size is None else bucket_size
    n_rows = -(-flat.numel() // d)
    rows = max(1, BLOCK_ELEMENTS // d)
    expand = d % _VECTOR_STEP == 0
    lo_buf = torch.empty(min(rows, n_rows), d, dtype=x.dtype, device=x.device) if expand else None
    hi_buf = torch.empty_like(lo_buf) if expand else None
    return _Blocks(flat, d, rows, n_rows, lo_buf, hi_buf)


def _uniform_blocked(x: torch.Tensor, bits: int, bucket_size: int | None) -> torch.Tensor:
    blocks = _blocks(x, bucket_size)
    n, d, steps = blocks.n, blocks.d, 2**bits - 1
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    for r0, r1, src in blocks:
        padded = r1 * d > n
        dst = torch.empty_like(src) if padded else out[r0 * d:r1 * d].view(-1, d)
        lo, hi, divisor = bucket_scaling(src)
        torch.sub(src, lo, out=dst)
        dst.div_(divisor).mul_(steps).add_(0.5).floor_().clamp_(0, steps).div_(steps)
        torch.lerp(*blocks.dense(lo, hi, src), dst, out=dst)
        if padded:
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
        layout=MINMAX,
    )


def nearest_point(u: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of the sorted ``points`` for each scaled value (decision at midpoints).

    An exact tie at a midpoint goes to the lower point. This is the definition every faster search
    below must reproduce, and the search used where they do not apply.
    """
    return torch.bucketize(u, _midpoints(points.detach()))


def _midpoints(points: torch.Tensor) -> torch.Tensor:
    return (points[1:] + points[:-1]) / 2


# Non-uniform quantization runs block by block like _uniform_blocked, for the same reason (a fresh
# tensor the size of a weight costs a round of page faults on a CPU), and replaces bucketize's binary
# search (~20 ns per weight on a CPU) by a table lookup and one comparison where that is exact.
_GRID_MIN, _GRID_MAX = 256, 1 << 16
# below this many elements building the lookup tables costs more than bucketize saves
_TABLE_MIN_ELEMENTS = 1 << 14


@dataclass
class _PointTable:
    """``bucketize(u, midpoints)`` for ``u`` in [0, 1] by a lookup on the grid ``floor(u * cells)``.

    ``floor(u * cells)`` is exact (``cells`` is a power of two) and monotone in ``u``, so every midpoint
    in a lower cell than ``u`` is below it and every one in a higher cell is above it; only the
    midpoints in ``u``'s own cell need a comparison. The grid is fine enough that each cell holds at
    most one distinct midpoint value, ``threshold[c]``, so the index is ``index[c]`` when
    ``u <= threshold[c]`` (a tie goes to the lower point, as bucketize) and ``index[c + cells + 1]``
    when ``u`` is above it. Midpoints outside [0, 1] are below or above every ``u``.
    """

    cells: int
    threshold: torch.Tensor  # (cells + 1,), the dtype of u
    index: torch.Tensor  # (2 * (cells + 1),) int32


def _point_table(points: torch.Tensor, dtype: torch.dtype) -> _PointTable | None:
    """Lookup tables for ``points``, or None where only bucketize is known to give its answer."""
    if dtype not in (torch.float32, torch.float64) or points.dtype != dtype or points.device.type != "cpu":
        return None  # u * cells must be exact and representable; the tables live on the CPU
    mids = _midpoints(points)
    if not bool(torch.isfinite(mids).all()) or bool((mids[1:] < mids[:-1]).any()):
        return None  # bucketize on unsorted boundaries is a binary search's accident, not a count
    inside = mids[(mids >= 0) & (mids <= 1)]
    n_below = int((mids < 0).sum())
    distinct = inside[1:] != inside[:-1]
    cells = _GRID_MIN
    while True:
        cell = (inside * cells).to(torch.int64)  # floor, as the int32 conversion in _point_search
        if not bool((distinct & (cell[1:] == cell[:-1])).any()):
            break
        cells *= 2
        if cells > _GRID_MAX:
            return None  # two distinct midpoints closer than 1 / _GRID_MAX
    grid = torch.arange(cells + 1)
    at_or_below = torch.searchsorted(cell, grid, right=False) + n_below
    above = torch.searchsorted(cell, grid, right=True) + n_below
    threshold = torch.zeros(cells + 1, dtype=dtype)
    threshold[cell] = inside  # cells with no midpoint: at_or_below == above, any threshold will do
    index = torch.cat([at_or_below, above]).to(torch.int32)
    return _PointTable(cells, threshold, index)


def _point_search(u: torch.Tensor, table: _PointTable, work) -> torch.Tensor:
    """``bucketize(u, midpoints)`` as int32 for ``u`` in [0, 1] (no NaN), in the buffers ``work``."""
    flat_u = u.reshape(-1)
    m = flat_u.numel()
    scaled, cell, upper = work[0][:m], work[1][:m], work[2][:m]
    torch.mul(flat_u, table.cells, out=scaled)
    cell.copy_(scaled)  # truncation: floor for u >= 0
    torch.index_select(table.threshold, 0, cell, out=scaled)
    torch.lt(scaled, flat_u, out=upper)
    cell.add_(upper, alpha=table.cells + 1)
    return torch.index_select(table.index, 0, cell, out=upper)


def _index_dtype(n_points: int) -> torch.dtype:
    """The smallest integer dtype for point indices: saved for backward, so it is memory held per weight."""
    if n_points <= 256:
        return torch.uint8
    return torch.int16 if n_points <= 2**15 else torch.int32


def _nonuniform_block(src, dst, idx_dst, points, table, work, blocks: _Blocks):
    """``Q(v, p)`` on one block of whole buckets: values in ``dst``, point indices in ``idx_dst``.

    Same steps and roundings as ``dequantize(lo, hi, points[nearest_point((b - lo) / divisor, points)])``;
    ``dst`` holds the scaled values until the point values replace them.
    """
    lo, hi, divisor = bucket_scaling(src)
    torch.sub(src, lo, out=dst).div_(divisor)
    # with a finite range every scaled value is in [0, 1]; NaN or inf in a bucket make NaN ranges
    if table is not None and bool(torch.isfinite(hi - lo).all()):
        idx = _point_search(dst, table, work)
    else:
        idx = nearest_point(dst, points).reshape(-1)
    idx_dst.copy_(idx)
    torch.index_select(points, 0, idx, out=dst.view(-1))
    torch.lerp(*blocks.dense(lo, hi, src), dst, out=dst)
    return lo, hi


def _nonuniform_blocked(x: torch.Tensor, points: torch.Tensor, bucket_size: int | None):
    """Quantized values (``x``'s shape), point indices (flat, compact dtype) and per-bucket lo, hi."""
    blocks = _blocks(x, bucket_size)
    points = points.detach()
    n, d = blocks.n, blocks.d
    table = _point_table(points, x.dtype) if n >= _TABLE_MIN_ELEMENTS else None
    block = min(blocks.rows, blocks.n_rows) * d
    work = (torch.empty(block, dtype=x.dtype), torch.empty(block, dtype=torch.int32),
            torch.empty(block, dtype=torch.int32)) if table is not None else None
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    idx = torch.empty(n, dtype=_index_dtype(points.numel()), device=x.device)
    lo = torch.empty(blocks.n_rows, 1, dtype=x.dtype, device=x.device)
    hi = torch.empty_like(lo)
    for r0, r1, src in blocks:
        e0, e1 = r0 * d, min(r1 * d, n)
        padded = r1 * d > n
        dst = torch.empty_like(src) if padded else out[e0:e1].view(-1, d)
        idx_dst = torch.empty(src.numel(), dtype=idx.dtype, device=x.device) if padded else idx[e0:e1]
        lo[r0:r1], hi[r0:r1] = _nonuniform_block(src, dst, idx_dst, points, table, work, blocks)
        if padded:
            out[e0:] = dst.reshape(-1)[: n - e0]
            idx[e0:] = idx_dst[: n - e0]
    return out.view(x.shape), idx, lo, hi


def _point_gradient(grad: torch.Tensor, idx: torch.Tensor, rng: torch.Tensor, d: int, n_points: int):
    """dL/dp_j = sum over the elements i assigned to p_j of dL/dQ_i * (range of i's bucket).

    Summed block by block with ``scatter_add_`` (~20x faster on a CPU than autograd's
    ``index_put_(accumulate=True)``), which needs int64 indices: only a block's worth is widened.
    """
    g = grad.reshape(-1)
    n = g.numel()
    rows = max(1, BLOCK_ELEMENTS // d)
    block = min(rows * d, n)
    dtype = torch.result_type(grad, rng)
    total = torch.zeros(n_points, dtype=dtype, device=grad.device)
    contribution = torch.empty(block, dtype=dtype, device=grad.device)
    wide = torch.empty(block, dtype=torch.int64, device=grad.device)
    for e0 in range(0, n, rows * d):
        e1 = min(e0 + rows * d, n)
        r0, whole = e0 // d, (e1 - e0) // d  # buckets in the block; a short last one comes apart
        c = contribution[: e1 - e0]
        torch.mul(g[e0:e0 + whole * d].view(whole, d), rng[r0:r0 + whole], out=c[: whole * d].view(whole, d))
        if e0 + whole * d < e1:
            torch.mul(g[e0 + whole * d:e1], rng[r0 + whole], out=c[whole * d:])
        total.scatter_add_(0, wide[: e1 - e0].copy_(idx[e0:e1]), c)
    return total


class _NonUniformQuantize(torch.autograd.Function):
    """``Q(v, p)`` forward; backward: the paper's point gradient, and the identity for ``x``."""

    @staticmethod
    def forward(ctx, x, points, bucket_size):
        out, idx, lo, hi = _nonuniform_blocked(x, points, bucket_size)
        ctx.save_for_backward(idx, hi - lo)
        ctx.d = x.numel() if bucket_size is None else bucket_size
        ctx.n_points = points.numel()
        return out

    @staticmethod
    def backward(ctx, grad):
        idx, rng = ctx.saved_tensors
        grad_points = _point_gradient(grad, idx, rng, ctx.d, ctx.n_points) if ctx.needs_input_grad[1] else None
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
    if x.numel() == 0:
        idx = torch.empty(0, dtype=torch.int64, device=x.device)
        lo = hi = torch.empty(0, dtype=x.dtype, device=x.device)
    else:
        _, idx, lo, hi = _nonuniform_blocked(x, points, bucket_size)
    return QuantCodes(
        indices=idx.long(),
        lo=lo.reshape(-1),
        hi=hi.reshape(-1),
        grid=points.detach().clone(),
        bucket_size=bucket_size,
        shape=tuple(x.shape),
        uniform=False,
        layout=MINMAX,
    )


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
