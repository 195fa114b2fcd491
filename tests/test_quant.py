"""Bucketed min-max quantization (qd/quant.py; paper notes 1.2-1.4, official-code notes 2.1-2.2, 2.5).

Every expected value below is either worked out by hand in a comment or computed by an independent,
loop-based re-derivation in float64 (not by calling the code under test a second time).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qd.quant import (
    check_bits,
    decode,
    encode_nonuniform,
    encode_uniform,
    quantile_points,
    quantize_nonuniform,
    quantize_uniform,
    to_buckets,
    uniform_grid,
    uniform_points,
)

F64 = torch.float64


def _buckets(x: torch.Tensor, d: int | None) -> list[torch.Tensor]:
    """The real (unpadded) elements of each bucket, by plain slicing of the flattened tensor."""
    flat = x.reshape(-1)
    if d is None:
        return [flat]
    return [flat[i : i + d] for i in range(0, flat.numel(), d)]


# ---------------------------------------------------------------- uniform: hand-computed cases


def test_uniform_two_bits_hand_case():
    # one bucket, lo=0, hi=1, levels {0, 1/3, 2/3, 1}; u*3 = [0, 0.3, 1.5, 2.22, 3]
    # round half up: [0, 0, 2, 2, 3]  (1.5 is an exact tie and goes up, unlike torch.round)
    x = torch.tensor([0.0, 0.1, 0.5, 0.74, 1.0], dtype=F64)
    q = quantize_uniform(x, bits=2, bucket_size=None)
    torch.testing.assert_close(q, torch.tensor([0.0, 0.0, 2 / 3, 2 / 3, 1.0], dtype=F64), rtol=0, atol=1e-15)


def test_uniform_one_bit_maps_to_min_or_max():
    # lo=-1, hi=5, range 6; u = (x+1)/6 = [4/6, 0, 0.3167, 0.35, 1, 0.5]; 1 bit = levels {min, max}
    # u=0.5 (x=2) is an exact tie and rounds up to the max
    x = torch.tensor([3.0, -1.0, 0.9, 1.1, 5.0, 2.0], dtype=F64)
    q = quantize_uniform(x, bits=1, bucket_size=None)
    assert q.tolist() == [5.0, -1.0, -1.0, -1.0, 5.0, 5.0]


def test_uniform_shifted_range_three_bits():
    # lo=2, hi=9, range 7, 3 bits -> 7 steps of exactly 1.0: levels are the integers 2..9
    x = torch.tensor([2.0, 9.0, 3.49, 3.51, 6.5, 8.2], dtype=F64)
    q = quantize_uniform(x, bits=3, bucket_size=None)
    torch.testing.assert_close(q, torch.tensor([2.0, 9.0, 3.0, 4.0, 7.0, 8.0], dtype=F64), rtol=0, atol=1e-14)


@pytest.mark.parametrize("bits", range(1, 9))
def test_uniform_levels_error_bound_and_min(bits):
    """Per bucket: values lie on lo + (hi-lo) k/(2^b-1), error <= half a step, min kept exactly."""
    g = torch.Generator().manual_seed(100 + bits)
    x = torch.randn(7, 15, generator=g, dtype=F64) * 3 + 0.5  # 105 elements: buckets 32,32,32,9
    d = 32
    q = quantize_uniform(x, bits, d)
    steps = 2**bits - 1
    for xb, qb in zip(_buckets(x, d), _buckets(q, d)):
        lo, hi = xb.min().item(), xb.max().item()
        k = (qb - lo) / (hi - lo) * steps
        assert torch.all((k - k.round()).abs() < 1e-9), "value off the level grid"
        assert k.round().min() >= 0 and k.round().max() <= steps
        assert torch.all((qb - xb).abs() <= (hi - lo) / (2 * steps) + 1e-12)
        assert qb.min().item() == lo  # lo + rng * 0 is exactly lo
        assert qb.max().item() == pytest.approx(hi, rel=0, abs=1e-12)
        # every element goes to its nearest level: no other level is strictly closer
        levels = lo + (hi - lo) * torch.arange(steps + 1, dtype=F64) / steps
        best = (xb[:, None] - levels[None, :]).abs().min(dim=1).values
        assert torch.all((qb - xb).abs() <= best + 1e-12)


def test_uniform_bucket_min_and_max_exactly_preserved():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64 * 200, generator=g)  # float32, 200 buckets
    q = quantize_uniform(x, 3, 64)
    xb, qb = to_buckets(x, 64), to_buckets(q, 64)
    assert torch.equal(qb.amin(dim=1), xb.amin(dim=1))
    assert torch.equal(qb.amax(dim=1), xb.amax(dim=1))


def test_partial_last_bucket_uses_its_own_min_max():
    # 10 elements, bucket 4 -> buckets [0:4], [4:8], [8:10]; the last has 2 elements of its own.
    # bits=2 (3 steps).
    # bucket 0: [0, 3, 1.2, 1.6]  lo=0 hi=3 step 1   -> [0, 3, 1, 2]
    # bucket 1: [10, 10.4, 11, 10.6] lo=10 hi=11 step 1/3: u*3=[0,1.2,3,1.8] -> [10, 10+1/3, 11, 10+2/3]
    # bucket 2: [-5, -4]: lo=-5 hi=-4 -> both endpoints unchanged. Had the padding not been a copy of
    # the last element (e.g. zeros), hi would be 0 and -4 would be snapped to -5 + 5*(k/3).
    x = torch.tensor([0.0, 3.0, 1.2, 1.6, 10.0, 10.4, 11.0, 10.6, -5.0, -4.0], dtype=F64)
    q = quantize_uniform(x, 2, 4)
    exp = torch.tensor([0, 3, 1, 2, 10, 10 + 1 / 3, 11, 10 + 2 / 3, -5, -4], dtype=F64)
    torch.testing.assert_close(q, exp, rtol=0, atol=1e-13)
    # a 3-element last bucket with an interior point: [-5, -4.5, -4.1] -> 1 bit: [-5, -4, -4] (tie up)
    x2 = torch.cat([x[:8], torch.tensor([-5.0, -4.5, -4.0], dtype=F64)])
    q2 = quantize_uniform(x2, 1, 4)
    assert q2[8:].tolist() == [-5.0, -4.0, -4.0]


def test_constant_bucket_unchanged_exactly():
    # bucket 0 non-constant, bucket 1 constant (0.3 is not a level of any grid it could be scaled to),
    # bucket 2 constant and partial
    x = torch.tensor([0.0, 1.0, 0.4, 0.7, 0.3, 0.3, 0.3, 0.3, -2.7, -2.7], dtype=torch.float32)
    for bits in (1, 2, 8):
        q = quantize_uniform(x, bits, 4)
        assert torch.equal(q[4:], x[4:])
        assert not torch.equal(q[:4], x[:4])  # the non-constant bucket is actually quantized
    c = torch.full((3, 5), -1.234567, dtype=F64)
    assert torch.equal(quantize_uniform(c, 2, None), c)
    codes = encode_uniform(c, 2, None)
    assert codes.rng.tolist() == [0.0] and codes.indices.unique().tolist() == [0]
    assert torch.equal(decode(codes), c)


def test_bucket_none_is_one_bucket():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 11, generator=g, dtype=F64)  # 55 elements
    q_none = quantize_uniform(x, 3, None)
    for d in (55, 56, 1000):
        assert torch.equal(q_none, quantize_uniform(x, 3, d))
    # and differs from a real bucketing (different scale per bucket)
    assert not torch.equal(q_none, quantize_uniform(x, 3, 8))
    # a single global scale: the grid spans the global min..max
    lo, hi = x.min().item(), x.max().item()
    k = (q_none - lo) / (hi - lo) * 7
    assert torch.all((k - k.round()).abs() < 1e-9)
    assert encode_uniform(x, 3, None).n_buckets == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(13,), (6, 7), (2, 3, 5, 5)])
@pytest.mark.parametrize("stochastic", [False, True])
def test_shape_and_dtype_preserved(dtype, shape, stochastic):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    q = quantize_uniform(x, 4, 16, stochastic=stochastic, generator=torch.Generator().manual_seed(2))
    assert q.shape == x.shape and q.dtype == dtype
    pts = uniform_points(5, dtype=dtype)
    qn = quantize_nonuniform(x, pts, 16)
    assert qn.shape == x.shape and qn.dtype == dtype


@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 2, 2)])
def test_empty_tensor(shape):
    x = torch.empty(shape)
    for d in (4, None):
        q = quantize_uniform(x, 2, d)
        assert q.shape == x.shape and q.numel() == 0 and q.dtype == x.dtype
        qn = quantize_nonuniform(x, torch.tensor([0.0, 1.0]), d)
        assert qn.shape == x.shape


def test_encode_empty_tensor_no_bucket():
    x = torch.empty(0)
    assert decode(encode_uniform(x, 2, None)).shape == (0,)


# ---------------------------------------------------------------- stochastic rounding


def test_stochastic_rounding_unbiased():
    """Mean of n independent draws per value equals the value within 5 standard errors.

    One bucket with lo=-2, hi=2 (range 4), 2 bits: step h = 4/3. A value whose scaled position has
    fractional part f is rounded to one of two levels h apart; the draw variance is h^2 f (1 - f), so the
    standard error of the mean of n draws is h sqrt(f(1-f)/n) <= h / (2 sqrt n) = 0.0021 for n = 1e5.
    """
    values = [-1.9, -0.5, 0.1, 0.77, 1.99]
    n = 100_000
    x = torch.cat([torch.tensor([-2.0, 2.0], dtype=F64)] + [torch.full((n,), v, dtype=F64) for v in values])
    g = torch.Generator().manual_seed(1234)
    q = quantize_uniform(x, 2, None, stochastic=True, generator=g)
    h = 4 / 3
    assert q[0].item() == -2.0 and q[1].item() == pytest.approx(2.0, abs=1e-15)  # endpoints exact
    for i, v in enumerate(values):
        qi = q[2 + i * n : 2 + (i + 1) * n]
        u = (v + 2) / h
        f = u - math.floor(u)
        down, up = -2 + h * math.floor(u), -2 + h * (math.floor(u) + 1)
        # only the two neighbouring levels occur
        is_down = (qi - down).abs() < 1e-12
        is_up = (qi - up).abs() < 1e-12
        assert torch.all(is_down | is_up)
        se = h * math.sqrt(f * (1 - f) / n)
        assert abs(qi.mean().item() - v) < 5 * se
        # the rounding-up frequency is f
        assert abs(is_up.double().mean().item() - f) < 5 * math.sqrt(f * (1 - f) / n)


def test_stochastic_level_value_never_moves():
    # values exactly on a level (fraction 0) are never rounded away: floor + (noise < 0) = floor
    x = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0] * 1000, dtype=F64)
    q = quantize_uniform(x, 2, None, stochastic=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q, x, rtol=0, atol=1e-15)


def test_stochastic_same_seed_same_output():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(5))
    a = quantize_uniform(x, 3, 64, stochastic=True, generator=torch.Generator().manual_seed(42))
    b = quantize_uniform(x, 3, 64, stochastic=True, generator=torch.Generator().manual_seed(42))
    c = quantize_uniform(x, 3, 64, stochastic=True, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # 1000 independent coin flips: identical with prob ~0
    # and the encoded form draws the same numbers
    codes = encode_uniform(x, 3, 64, stochastic=True, generator=torch.Generator().manual_seed(42))
    assert torch.equal(decode(codes), a)


# ---------------------------------------------------------------- encode / decode (uniform)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("numel,bucket", [(1, 4), (7, 3), (37, 5), (101, 16), (257, 256), (99, None), (12, 1)])
def test_encode_decode_uniform_round_trip(bits, numel, bucket):
    g = torch.Generator().manual_seed(bits * 1000 + numel)
    x = torch.randn(numel, generator=g) * 2 - 0.3
    codes = encode_uniform(x, bits, bucket)
    assert torch.equal(decode(codes), quantize_uniform(x, bits, bucket))
    assert codes.indices.dtype == torch.int64 and codes.indices.numel() == numel
    assert codes.indices.min() >= 0 and codes.indices.max() <= 2**bits - 1
    n_buckets = 1 if bucket is None else math.ceil(numel / bucket)
    assert codes.n_buckets == n_buckets and codes.n_levels == 2**bits
    assert codes.uniform and codes.shape == (numel,)


def test_encode_indices_hand_case_and_shape():
    # the 2-bit hand case above as indices; a 2-D tensor keeps its shape through decode
    x = torch.tensor([[0.0, 0.1, 0.5], [0.74, 1.0, 0.4]], dtype=F64)  # u*3: 0 .3 1.5 2.22 3 1.2
    codes = encode_uniform(x, 2, None)
    assert codes.indices.tolist() == [0, 0, 2, 2, 3, 1]
    assert codes.lo.tolist() == [0.0] and codes.rng.tolist() == [1.0]
    torch.testing.assert_close(codes.grid, torch.tensor([0, 1 / 3, 2 / 3, 1], dtype=F64), rtol=0, atol=0)
    assert decode(codes).shape == (2, 3)
    assert torch.equal(decode(codes), quantize_uniform(x, 2, None))


def test_uniform_grid():
    assert uniform_grid(1).tolist() == [0.0, 1.0]
    torch.testing.assert_close(uniform_grid(3, dtype=F64), torch.arange(8, dtype=F64) / 7, rtol=0, atol=0)


# ---------------------------------------------------------------- non-uniform


def test_nonuniform_hand_case():
    # lo=-1, hi=3, range 4: u = (x+1)/4 = [0, .25, .375, .5, .7, 1, .1]
    # points [0, 0.2, 1] -> midpoints [0.1, 0.6]; nearest: [0, 1, 1, 1, 2, 2, 0 (tie at 0.1 goes down)]
    # output lo + 4*p: p=0 -> -1, p=0.2 -> -0.2, p=1 -> 3
    x = torch.tensor([-1.0, 0.0, 0.5, 1.0, 1.8, 3.0, -0.6], dtype=F64)
    pts = torch.tensor([0.0, 0.2, 1.0], dtype=F64)
    q = quantize_nonuniform(x, pts, None)
    torch.testing.assert_close(q, torch.tensor([-1, -0.2, -0.2, -0.2, 3, 3, -1], dtype=F64), rtol=0, atol=1e-15)
    codes = encode_nonuniform(x, pts, None)
    assert codes.indices.tolist() == [0, 1, 1, 1, 2, 2, 0]
    assert not codes.uniform and codes.n_levels == 3


def test_nonuniform_points_inside_range_and_per_bucket_scaling():
    # points need not include 0 and 1; each bucket uses its own lo, range with the shared points.
    # bucket 0 [0, 10, 4]: lo 0, rng 10, u [0, 1, .4]; bucket 1 [-1, 1]: lo -1, rng 2, u [0, 1]
    # points [0.25, 0.5, 0.9], midpoints [0.375, 0.7]: u=0 -> .25, u=1 -> .9, u=.4 -> .5
    x = torch.tensor([0.0, 10.0, 4.0, -1.0, 1.0], dtype=F64)
    pts = torch.tensor([0.25, 0.5, 0.9], dtype=F64)
    q = quantize_nonuniform(x, pts, 3)
    exp = torch.tensor([2.5, 9.0, 5.0, -1 + 2 * 0.25, -1 + 2 * 0.9], dtype=F64)
    torch.testing.assert_close(q, exp, rtol=0, atol=1e-14)


def test_nonuniform_with_uniform_points_equals_uniform_quantizer():
    # nearest point of the grid k/(2^b-1) is round-to-nearest; ties are measure-zero for random data
    x = torch.randn(300, generator=torch.Generator().manual_seed(9), dtype=F64)
    for bits in (1, 2, 3, 5):
        pts = uniform_points(2**bits, dtype=F64)
        torch.testing.assert_close(quantize_nonuniform(x, pts, 64), quantize_uniform(x, bits, 64),
                                   rtol=0, atol=1e-12)


def _points_gradient_setup():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(203, generator=g, dtype=F64)  # buckets of 64: 64, 64, 64, 11
    d = 64
    pts = torch.tensor([0.0, 0.13, 0.42, 0.58, 0.81, 1.0], dtype=F64)
    c = torch.randn(203, generator=g, dtype=F64)
    # independent assignment: scale each bucket by hand and pick the nearest point by brute force
    assign, scale = [], []
    for xb in _buckets(x, d):
        lo, hi = xb.min().item(), xb.max().item()
        for v in xb.tolist():
            u = (v - lo) / (hi - lo)
            assign.append(min(range(len(pts)), key=lambda j: abs(u - pts[j].item())))
            scale.append(hi - lo)
            # precondition: no element within 1e-4 of a midpoint, so a 1e-6 perturbation keeps assignments
            mids = ((pts[1:] + pts[:-1]) / 2).tolist()
            assert min(abs(u - m) for m in mids) > 1e-4
    return x, pts, c, d, torch.tensor(assign), torch.tensor(scale, dtype=F64)


def test_nonuniform_points_gradient_closed_form_and_finite_differences():
    x, pts, c, d, assign, scale = _points_gradient_setup()
    p = pts.clone().requires_grad_(True)
    loss = (c * quantize_nonuniform(x, p, d)).sum()
    loss.backward()
    grad = p.grad.clone()
    # closed form (notes 1.7): dL/dp_j = sum over elements assigned to j of c_i * (bucket range)
    closed = torch.zeros_like(pts).index_add_(0, assign, c * scale)
    torch.testing.assert_close(grad, closed, rtol=1e-12, atol=1e-12)
    # every point is used by some element, so the check is not vacuous
    assert torch.bincount(assign, minlength=len(pts)).min() > 0
    # central finite differences (L is linear in p while assignments are fixed)
    eps = 1e-6
    fd = torch.zeros_like(pts)
    with torch.no_grad():
        for j in range(len(pts)):
            e = torch.zeros_like(pts)
            e[j] = eps
            fd[j] = ((c * quantize_nonuniform(x, pts + e, d)).sum() - (c * quantize_nonuniform(x, pts - e, d)).sum()) / (2 * eps)
    torch.testing.assert_close(grad, fd, rtol=1e-7, atol=1e-7)
    # the assignment the code uses is the brute-force one
    assert torch.equal(encode_nonuniform(x, pts, d).indices, assign)


def test_nonuniform_straight_through_gradient_to_x():
    x, pts, c, d, _, _ = _points_gradient_setup()
    xr = x.clone().requires_grad_(True)
    p = pts.clone().requires_grad_(True)
    (c * quantize_nonuniform(xr, p, d)).sum().backward()
    assert torch.equal(xr.grad, c)  # identity backward
    assert p.grad is not None
    # forward value is unchanged by the straight-through term
    torch.testing.assert_close(quantize_nonuniform(xr, pts, d).detach(), quantize_nonuniform(x, pts, d),
                               rtol=0, atol=1e-15)
    # without requires_grad on x nothing flows to x
    q = quantize_nonuniform(x, p, d)
    assert q.requires_grad and not x.requires_grad


@pytest.mark.parametrize("numel,bucket", [(1, 4), (50, 7), (256, 256), (77, None), (9, 1)])
def test_encode_decode_nonuniform_round_trip(numel, bucket):
    g = torch.Generator().manual_seed(numel)
    x = torch.randn(numel, generator=g)
    pts = torch.sort(torch.rand(5, generator=g)).values
    codes = encode_nonuniform(x, pts, bucket)
    assert torch.equal(decode(codes), quantize_nonuniform(x, pts, bucket))
    assert codes.indices.min() >= 0 and codes.indices.max() <= 4
    assert torch.equal(codes.grid, pts)


# ---------------------------------------------------------------- non-uniform: the fast nearest-point search
# Tensors of >= 2**14 elements take a lookup-table search instead of bucketize; it must give the same
# indices and values as the plain definition below, ties at midpoints included.


def _reference_nonuniform(x: torch.Tensor, pts: torch.Tensor, d: int | None):
    """Q(v, p) written out: pad with the last element, scale each bucket, bucketize on the midpoints."""
    flat = x.reshape(-1)
    n = flat.numel()
    d = n if d is None else d
    b = torch.cat([flat, flat[-1:].expand((-n) % d)]).view(-1, d)
    lo, hi = b.min(dim=1, keepdim=True).values, b.max(dim=1, keepdim=True).values
    rng = hi - lo
    u = (b - lo) / torch.where(rng > 1e-10, rng, torch.ones_like(rng))
    idx = torch.bucketize(u, (pts[1:] + pts[:-1]) / 2)  # right=False: a tie goes to the lower point
    q = torch.lerp(lo, hi, pts[idx])
    return q.reshape(-1)[:n].view(x.shape), idx.reshape(-1)[:n]


def _points_and_ties(g, n_points: int, dtype, spread: float):
    """Sorted random points (some outside [0, 1] when ``spread`` > 1) and values on and next to their midpoints."""
    pts = torch.sort(torch.rand(n_points, generator=g, dtype=dtype) * spread - (spread - 1) / 2).values
    mids = (pts[1:] + pts[:-1]) / 2
    two = torch.tensor(2.0, dtype=dtype)
    near = torch.cat([mids, torch.nextafter(mids, two), torch.nextafter(mids, -two)])
    return pts, near[(near >= 0) & (near <= 1)]


def _tie_tensor(g, near: torch.Tensor, rows: int, d: int) -> torch.Tensor:
    """Buckets holding 0 and 1 (so lo = 0, hi = 1 and u = x exactly) and values on or next to midpoints."""
    body = near[torch.randint(0, near.numel(), (rows, d - 2), generator=g)]
    ends = torch.tensor([0.0, 1.0], dtype=near.dtype).expand(rows, 2)
    return torch.cat([ends, body], dim=1).reshape(-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_points,spread", [(2, 1.0), (16, 1.0), (16, 1.5), (100, 1.2), (256, 1.0), (300, 1.0)])
def test_nonuniform_fast_search_matches_bucketize_at_midpoint_ties(dtype, n_points, spread):
    g = torch.Generator().manual_seed(n_points)
    pts, near = _points_and_ties(g, n_points, dtype, spread)
    x = _tie_tensor(g, near, rows=200, d=256)
    want, want_idx = _reference_nonuniform(x, pts, 256)
    assert torch.equal(quantize_nonuniform(x, pts, 256), want)
    assert torch.equal(encode_nonuniform(x, pts, 256).indices, want_idx)
    assert (x.view(-1, 256)[:, 2:].unsqueeze(-1) == ((pts[1:] + pts[:-1]) / 2)).any()  # ties are there


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bucket", [None, 1, 7, 100, 256, 1000])
def test_nonuniform_fast_search_matches_bucketize_random(dtype, bucket):
    g = torch.Generator().manual_seed(3 if bucket is None else bucket)
    x = torch.randn(70_001, generator=g, dtype=dtype)  # a short last bucket for most sizes
    for pts in (torch.sort(torch.rand(16, generator=g, dtype=dtype)).values,
                torch.sort(torch.randn(9, generator=g, dtype=dtype)).values,  # points outside [0, 1]
                torch.tensor([0.0, 0.0, 0.3, 0.3, 0.3, 0.5, 1.0, 1.0], dtype=dtype),  # repeated points
                torch.tensor([0.4, 0.4 + 1e-9, 0.6], dtype=dtype),  # closer than any lookup grid
                torch.zeros(1, dtype=dtype)):
        want, want_idx = _reference_nonuniform(x, pts, bucket)
        assert torch.equal(quantize_nonuniform(x, pts, bucket), want)
        assert torch.equal(encode_nonuniform(x, pts, bucket).indices, want_idx)


def test_nonuniform_fast_search_non_finite_buckets():
    # NaN or inf in a bucket makes its scaled values NaN; bucketize sends NaN to the last point
    g = torch.Generator().manual_seed(4)
    x = torch.randn(40_000, generator=g)
    x[[5, 20_000]] = float("nan")
    x[[300, 30_000]] = float("inf")
    x[35_000] = -float("inf")
    pts = torch.sort(torch.rand(16, generator=g)).values
    want, want_idx = _reference_nonuniform(x, pts, 256)
    got = quantize_nonuniform(x, pts, 256)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(torch.nan_to_num(got), torch.nan_to_num(want))
    assert torch.equal(encode_nonuniform(x, pts, 256).indices, want_idx)


def test_nonuniform_unsorted_points_keep_bucketize_result():
    # the search is defined for sorted points; unsorted ones still give what bucketize gives
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20_000, generator=g)
    pts = torch.rand(16, generator=g)
    assert torch.equal(quantize_nonuniform(x, pts, 256), _reference_nonuniform(x, pts, 256)[0])


@pytest.mark.parametrize("bucket", [None, 7, 256])
def test_nonuniform_fast_path_gradient_closed_form(bucket):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(50_003, generator=g, dtype=F64)
    c = torch.randn(50_003, generator=g, dtype=F64)
    pts = torch.sort(torch.rand(16, generator=g, dtype=F64)).values
    p = pts.clone().requires_grad_(True)
    xr = x.clone().requires_grad_(True)
    (c * quantize_nonuniform(xr, p, bucket)).sum().backward()
    _, assign = _reference_nonuniform(x, pts, bucket)
    ranges = torch.cat([(b.max() - b.min()).expand(b.numel()) for b in _buckets(x, bucket)])
    closed = torch.zeros_like(pts).index_add_(0, assign, c * ranges)
    torch.testing.assert_close(p.grad, closed, rtol=1e-12, atol=1e-9)
    assert torch.equal(xr.grad, c)


# ---------------------------------------------------------------- quantile points


def test_quantile_points_match_numpy_percentile():
    g = torch.Generator().manual_seed(21)
    x = torch.randn(37, generator=g, dtype=F64) ** 3
    u = ((x - x.min()) / (x.max() - x.min())).numpy()
    for n in (2, 3, 4, 7, 16):
        pts = quantile_points(x, n, None)
        assert pts[0].item() == 0.0 and pts[-1].item() == 1.0
        np.testing.assert_allclose(pts.numpy(), np.percentile(u, np.linspace(0, 100, n)), rtol=0, atol=1e-12)
        assert torch.all(pts[1:] >= pts[:-1])


def test_quantile_points_bucketed_pool_scaled_values():
    # with buckets, every bucket is scaled by its own min/max and the scaled values are pooled
    g = torch.Generator().manual_seed(22)
    x = torch.randn(50, generator=g, dtype=F64)
    d = 16  # buckets 16, 16, 16, 2
    u = np.concatenate([((b - b.min()) / (b.max() - b.min())).numpy() for b in _buckets(x, d)])
    pts = quantile_points(x, 8, d)
    assert pts[0].item() == 0.0 and pts[-1].item() == 1.0
    np.testing.assert_allclose(pts.numpy(), np.percentile(u, np.linspace(0, 100, 8)), rtol=0, atol=1e-12)


def test_quantile_points_hand_case():
    # x = 0..4 -> u = [0, .25, .5, .75, 1]; 3 points at percentiles 0, 50, 100 -> [0, .5, 1];
    # 2 points -> [0, 1]; 9 points interpolate halfway between order statistics -> k/8
    x = torch.tensor([4.0, 0.0, 2.0, 1.0, 3.0], dtype=F64)
    assert quantile_points(x, 3, None).tolist() == [0.0, 0.5, 1.0]
    assert quantile_points(x, 2, None).tolist() == [0.0, 1.0]
    torch.testing.assert_close(quantile_points(x, 9, None), torch.arange(9, dtype=F64) / 8, rtol=0, atol=1e-15)


def test_uniform_points():
    assert uniform_points(1).tolist() == [0.0]
    assert uniform_points(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


# ---------------------------------------------------------------- argument checks


@pytest.mark.parametrize("bad", [0, 17, 2.5, -1, "4"])
def test_check_bits_rejects(bad):
    with pytest.raises(ValueError, match="bits"):
        check_bits(bad)
    with pytest.raises(ValueError):
        quantize_uniform(torch.zeros(4), bad)


@pytest.mark.parametrize("ok", [1, 8, 16])
def test_check_bits_accepts(ok):
    check_bits(ok)


def test_bad_bucket_size_rejected():
    with pytest.raises(ValueError, match="bucket_size"):
        quantize_uniform(torch.randn(10), 2, 0)


@pytest.mark.parametrize("bucket", [None, 7, 256, 1000])
@pytest.mark.parametrize("bits", [1, 3, 8])
def test_blocked_path_equals_the_encoded_levels_on_large_tensors(bits, bucket):
    """Large tensors take the blocked in-place path; it must give the same bits as the codes."""
    x = torch.randn(3 * (1 << 19) + 12_345, generator=torch.Generator().manual_seed(bits))
    assert torch.equal(quantize_uniform(x, bits, bucket), decode(encode_uniform(x, bits, bucket)))


# ---------------------------------------------------------------- layouts (qd/quantizers/layouts.py)

from qd.quantizers import layouts  # noqa: E402
from qd.quantizers.layouts import (  # noqa: E402
    AFFINE,
    CODEBOOK,
    MINMAX,
    STEP,
    QuantCodes,
    encode_codebook,
    from_groups,
    group_index,
    group_sizes,
    integer_codes,
    level_spacing,
    to_groups,
)


def test_paper_codes_state_the_minmax_layout():
    import qd.quant

    assert qd.quant.QuantCodes is QuantCodes and qd.quant.decode is layouts.decode
    x = torch.randn(37, generator=torch.Generator().manual_seed(0))
    for codes in (encode_uniform(x, 3, 8), encode_nonuniform(x, torch.tensor([0.0, 0.4, 1.0]), 8)):
        assert codes.layout == MINMAX and codes.n_groups == codes.n_buckets == 5
        assert codes.scale is None and codes.zero_point is None and codes.axis is None
    # the uniform grid's spacing: lo + (hi - lo) / 7 * index
    codes = encode_uniform(x, 3, 8)
    offset, step = level_spacing(codes)
    assert torch.equal(offset, codes.lo) and torch.equal(step, codes.rng / 7)
    assert level_spacing(encode_nonuniform(x, torch.tensor([0.0, 0.4, 1.0]), 8)) is None


def test_codebook_hand_case():
    # values [-1, 0, 0.5, 2], midpoints [-0.5, 0.25, 1.25]; ties at midpoints go to the lower value
    values = torch.tensor([-1.0, 0.0, 0.5, 2.0])
    x = torch.tensor([[-2.0, -0.5, 0.1], [0.3, 1.25, 5.0], [0.25, 0.26, -0.49]])
    codes = encode_codebook(x, values)
    assert codes.layout == CODEBOOK and not codes.uniform and codes.n_buckets == 0 and codes.n_levels == 4
    assert codes.indices.tolist() == [0, 0, 1, 2, 2, 3, 1, 2, 1]
    assert decode(codes).tolist() == [[-1.0, -1.0, 0.0], [0.5, 0.5, 2.0], [0.0, 0.5, 0.0]]
    assert level_spacing(codes) is None
    with pytest.raises(ValueError, match="sorted"):
        encode_codebook(x, torch.tensor([0.0, 1.0, 0.5]))


def test_groups_along_an_axis_and_flat_buckets():
    x = torch.arange(24.0).view(2, 3, 4)
    rows = to_groups(x, axis=1)
    assert rows.shape == (3, 8) and rows[0].tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert torch.equal(from_groups(rows, (2, 3, 4), axis=1), x)
    flat = to_groups(x, None, 10)
    assert flat.shape == (3, 10) and flat[2].tolist() == [20, 21, 22, 23] + [0] * 6  # zero padding
    assert torch.equal(from_groups(flat, (2, 3, 4)), x)
    assert group_sizes((2, 3, 4), None, 10).tolist() == [10, 10, 4]
    assert group_sizes((2, 3, 4), 1, None).tolist() == [8, 8, 8]
    assert group_sizes((2, 3, 4), None, None).tolist() == [24]
    codes = integer_codes(torch.zeros(2, 3, 4, dtype=torch.long), torch.ones(3), None, -1, 1, (2, 3, 4),
                          torch.float32, axis=1)
    assert torch.equal(group_index(codes).view(2, 3, 4), torch.arange(3).view(1, 3, 1).expand(2, 3, 4))
    codes = integer_codes(torch.zeros(24, dtype=torch.long), torch.ones(3), None, -1, 1, (2, 3, 4),
                          torch.float32, bucket_size=10)
    assert group_index(codes).tolist() == [0] * 10 + [1] * 10 + [2] * 4


def test_integer_codes_hand_case():
    # step layout: levels -2..1 per channel (axis 0), steps [0.5, 2]: values [[-1, 0.5], [0, -2]]
    levels = torch.tensor([[-2, 1], [0, -1]])
    codes = integer_codes(levels, torch.tensor([0.5, 2.0]), None, -2, 1, (2, 2), torch.float32, axis=0)
    assert codes.layout == STEP and codes.uniform and codes.n_levels == 4 and codes.quant_max == 1
    assert codes.axis is None and codes.bucket_size == 2  # channels along axis 0: flat buckets of the fan-in
    assert codes.indices.tolist() == [0, 3, 2, 1]
    assert codes.lo.tolist() == [-1.0, -4.0] and codes.hi.tolist() == [0.5, 2.0]  # levels -2 and 1
    torch.testing.assert_close(codes.grid, torch.tensor([0, 1 / 3, 2 / 3, 1]), rtol=0, atol=0)
    assert decode(codes).tolist() == [[-1.0, 0.5], [0.0, -2.0]]
    # affine layout: levels 0..3 with zero points [1, 0]: (q - z) * s = [[-0.5, 1.0], [2.0, 4.0]]
    codes = integer_codes(torch.tensor([[0, 3], [1, 2]]), torch.tensor([0.5, 2.0]), torch.tensor([1, 0]), 0, 3,
                          (2, 2), torch.float32, axis=0)
    assert codes.layout == AFFINE and decode(codes).tolist() == [[-0.5, 1.0], [2.0, 4.0]]
    offset, step = level_spacing(codes)
    assert offset.tolist() == [-0.5, 0.0] and step.tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="3 scales for 2 groups"):
        integer_codes(levels, torch.ones(3), None, -2, 1, (2, 2), torch.float32, axis=0)
    with pytest.raises(ValueError, match="quant_max"):
        integer_codes(levels, torch.ones(2), None, 1, 1, (2, 2), torch.float32, axis=0)


def test_codes_check_their_layout_statement():
    t = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown quantized-codes layout"):
        QuantCodes(t.long(), t, t, t, None, (1,), True, layout="lattice")
    with pytest.raises(ValueError, match="need a scale"):
        QuantCodes(t.long(), t, t, t, None, (1,), True, layout=STEP)
    with pytest.raises(ValueError, match="need zero points"):
        QuantCodes(t.long(), t, t, t, None, (1,), True, layout=AFFINE, scale=t)
    with pytest.raises(ValueError, match="axis"):
        QuantCodes(t.long(), t, t, t, None, (1,), True, axis=0)
