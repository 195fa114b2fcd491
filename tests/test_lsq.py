"""Learned step size quantization (qd/quantizers/lsq.py; Esser et al. 2020).

Hand-worked forward values and step gradients; this module's autograd function against PyTorch's
learnable fake-quantize ops (forward values, gradients for the weights and the steps); the step
gradient against central finite differences; codes through ``decode`` and the artefact bit for bit;
one fp32 per step in the analytic size.
"""
from __future__ import annotations

import math

import pytest
import torch

from qd.artefact import export_artefact, load_artefact
from qd.quant import decode
from qd.quantizers.layouts import AFFINE, STEP
from qd.quantizers.lsq import LSQQuantizer, LSQQuantizers, gradient_scale, lsq_range
from qd.size import model_sizes

F64 = torch.float64


def test_level_ranges_and_gradient_scale():
    assert lsq_range(4) == (-8, 7) and lsq_range(2) == (-2, 1)
    assert lsq_range(4, symmetric=False) == (0, 15) and lsq_range(1, symmetric=False) == (0, 1)
    with pytest.raises(ValueError, match="bits >= 2"):
        lsq_range(1)
    assert gradient_scale(100, 7) == 1 / math.sqrt(700)


def test_initial_step_and_gradient_scale_per_granularity():
    # w = [1, -3, 0, 2], 3 bits signed: Q_P = 3. Initial step 2 mean|w| / sqrt(3) over the weights sharing it:
    # per tensor mean 6/4 -> 3/sqrt3; buckets of 3: [1, -3, 0] mean 4/3, [2] mean 2; channels [1, -3], [0, 2]
    w = torch.tensor([[1.0, -3.0], [0.0, 2.0]], dtype=F64)
    r3 = math.sqrt(3)
    cases = {"tensor": ([3 / r3], 4), "bucket": ([8 / 3 / r3, 4 / r3], 3), "channel": ([4 / r3, 2 / r3], 2)}
    for granularity, (steps, per_step) in cases.items():
        q = LSQQuantizer(w, 3, granularity, bucket_size=3)
        torch.testing.assert_close(q.step.detach(), torch.tensor(steps, dtype=F64), rtol=1e-15, atol=0)
        assert q.numel_per_step == per_step
        assert q.grad_scale == 1 / math.sqrt(per_step * 3)


@pytest.mark.parametrize("implementation", ["autograd", "torch"])
def test_forward_and_step_gradient_hand_case(implementation):
    # step 0.5, 3 bits signed (levels -4..3): w / s = [0.4, 0.5, 1.5, -0.6, 3.2, -6]
    # round half to even: [0, 0, 2, -1, 3, -6 -> clipped to -4] -> values [0, 0, 1, -0.5, 1.5, -2]
    # d/ds with dL/dv_hat = 1: inside round(v/s) - v/s = [-0.4, -0.5, 0.5, -0.4, -0.2]; clipped: -4
    # sum -5.0, times g = 1 / sqrt(6 * 3)
    w = torch.tensor([0.2, 0.25, 0.75, -0.3, 1.6, -3.0])
    q = LSQQuantizer(w, 3, implementation=implementation)
    with torch.no_grad():
        q.step.fill_(0.5)
    wr = w.clone().requires_grad_(True)
    out = q(wr)
    assert out.tolist() == [0.0, 0.0, 1.0, -0.5, 1.5, -2.0]
    out.sum().backward()
    assert wr.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # straight through, zero where clipped
    torch.testing.assert_close(q.step.grad, torch.tensor([-5.0 / math.sqrt(18)]), rtol=1e-6, atol=0)
    codes = q.encode(w)
    assert codes.layout == STEP and codes.quant_min == -4 and codes.quant_max == 3
    assert codes.indices.tolist() == [4, 4, 6, 3, 7, 0]  # level + 4
    assert codes.scale.tolist() == [0.5] and codes.zero_point is None


def test_paper_clipping_hand_case():
    # the hand case above under the paper's eq. 3: 1.6 / 0.5 = 3.2 >= Q_P = 3 is clipped (its level, 3,
    # is not): d/ds = 3 instead of -0.2 and no gradient to the weight. Sum -0.8 + 3 - 4 = -1.8.
    w = torch.tensor([0.2, 0.25, 0.75, -0.3, 1.6, -3.0])
    q = LSQQuantizer(w, 3, clipping="paper")
    with torch.no_grad():
        q.step.fill_(0.5)
    wr = w.clone().requires_grad_(True)
    out = q(wr)
    assert out.tolist() == [0.0, 0.0, 1.0, -0.5, 1.5, -2.0]  # the same forward values
    out.sum().backward()
    assert wr.grad.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(q.step.grad, torch.tensor([-1.8 / math.sqrt(18)]), rtol=1e-6, atol=0)


def test_asymmetric_zero_point_is_set_from_the_minimum_and_held():
    # 2 bits unsigned (levels 0..3, Q_P = 3): w = [-1, 0, 1, 2], mean|w| = 1 -> step 2/sqrt3 = 1.1547;
    # zero point round(1 / 1.1547) = round(0.866) = 1. Levels round(w / s) + 1 = [0, 1, 2, 3].
    w = torch.tensor([-1.0, 0.0, 1.0, 2.0], dtype=F64)
    q = LSQQuantizer(w, 2, symmetric=False)
    assert q.zero_point.tolist() == [1.0]
    s = 2 / math.sqrt(3)
    torch.testing.assert_close(q(w), torch.tensor([-s, 0.0, s, 2 * s], dtype=F64), rtol=1e-15, atol=0)
    codes = q.encode(w)
    assert codes.layout == AFFINE and codes.indices.tolist() == [0, 1, 2, 3] and codes.zero_point.tolist() == [1]
    assert "zero_point" in q.state_dict() and "zero_point" not in LSQQuantizer(w, 2).state_dict()


SHAPES = [(16, 3, 5, 5), (300,), (7, 33)]


def _weight(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 0.1 + 0.01


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "bucket"])
@pytest.mark.parametrize("shape", SHAPES)
def test_own_autograd_matches_the_pytorch_learnable_ops(shape, granularity, symmetric):
    w = _weight(shape)
    c = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    results = {}
    for impl in ("autograd", "torch"):
        q = LSQQuantizer(w, 4, granularity, bucket_size=64, symmetric=symmetric, implementation=impl)
        with torch.no_grad():  # a trained-looking step: some weights clipped at both ends
            q.step.mul_(torch.linspace(0.1, 1.4, q.step.numel()))
        wr = w.clone().requires_grad_(True)
        out = q(wr)
        (c * out).sum().backward()
        results[impl] = out.detach(), wr.grad, q.step.grad
    (out_a, gw_a, gs_a), (out_t, gw_t, gs_t) = results["autograd"], results["torch"]
    assert torch.equal(out_a, out_t)
    assert torch.equal(gw_a, gw_t)
    assert (gw_a == 0).any() and (gw_a != 0).any()  # both branches occur
    torch.testing.assert_close(gs_a, gs_t, rtol=1e-5, atol=1e-7)


def _surrogate_loss(w, c, s, s0, qmin, qmax, z, groups):
    """The paper's straight-through formulation, ``s * (clamp(v / s + z) + delta - z)`` with the rounding
    offset ``delta = round(u) - u`` frozen at ``s0``: equal to the quantizer at ``s0``, smooth in ``s``,
    and its derivative is the paper's eq. 3 (clipped where ``v / s + z`` is outside the range)."""
    def u(step):
        return (w / step[groups] + z[groups]).clamp(qmin, qmax)
    delta = torch.round(u(s0)) - u(s0)
    return (c * s[groups] * (u(s) + delta - z[groups])).sum()


def _true_loss(w, c, s, qmin, qmax, z, groups):
    return (c * (torch.clamp(torch.round(w / s[groups]) + z[groups], qmin, qmax) - z[groups]) * s[groups]).sum()


@pytest.mark.parametrize("clipping", ["pytorch", "paper"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "bucket"])
def test_step_gradient_matches_finite_differences(granularity, symmetric, clipping):
    w = torch.randn(6, 50, generator=torch.Generator().manual_seed(2), dtype=F64) * 0.1
    c = torch.randn(6, 50, generator=torch.Generator().manual_seed(3), dtype=F64)
    q = LSQQuantizer(w, 3, granularity, bucket_size=64, symmetric=symmetric, clipping=clipping)
    with torch.no_grad():
        q.step.mul_(0.8)  # some weights clipped
    wr = w.clone().requires_grad_(True)
    (c * q(wr)).sum().backward()
    lsq = q.step.grad / q.grad_scale  # the gradient before LSQ's scale g
    s0 = q.step.detach().clone()
    z = q.zero_point if q.zero_point is not None else torch.zeros_like(s0)
    groups = {"tensor": torch.zeros(300, dtype=torch.long), "channel": torch.arange(300) // 50,
              "bucket": torch.arange(300) // 64}[granularity].view(6, 50)
    qmin, qmax = q.quant_min, q.quant_max
    level = torch.round(w / s0[groups]) + z[groups]
    unrounded = w / s0[groups] + z[groups]
    inside = (unrounded > qmin) & (unrounded < qmax) if clipping == "paper" else (level >= qmin) & (level <= qmax)
    band = ((level >= qmin) & (level <= qmax)) != ((unrounded > qmin) & (unrounded < qmax))
    assert (~inside).any() and inside.any() and band.any()  # the two rules differ on some weights here
    assert torch.equal(wr.grad, c * inside)  # straight through where not clipped
    eps = 1e-7
    fd_surrogate, fd_true = torch.zeros_like(s0), torch.zeros_like(s0)
    for j in range(s0.numel()):
        e = torch.zeros_like(s0)
        e[j] = eps
        fd_surrogate[j] = (_surrogate_loss(w, c, s0 + e, s0, qmin, qmax, z, groups)
                           - _surrogate_loss(w, c, s0 - e, s0, qmin, qmax, z, groups)) / (2 * eps)
        # no level changes within +-eps, so the true forward is linear there
        for step in (s0 + e, s0 - e):
            assert torch.equal(torch.round(w / step[groups]), torch.round(w / s0[groups]))
        fd_true[j] = (_true_loss(w, c, s0 + e, qmin, qmax, z, groups)
                      - _true_loss(w, c, s0 - e, qmin, qmax, z, groups)) / (2 * eps)
    # either rule: the true derivative plus the straight-through term -v/s of each weight not clipped
    ste_term = torch.zeros_like(s0).index_add_(0, groups[inside], -(c * w / s0[groups])[inside])
    torch.testing.assert_close(lsq, fd_true + ste_term, rtol=1e-6, atol=1e-6)
    if clipping == "paper":  # and the paper's rule is the derivative of its straight-through formulation
        torch.testing.assert_close(lsq, fd_surrogate, rtol=1e-6, atol=1e-6)
    else:
        assert not torch.allclose(lsq, fd_surrogate, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("implementation", ["autograd", "torch"])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "bucket"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_encode_decodes_to_the_forward_bit_for_bit(bits, granularity, symmetric, implementation):
    for shape in SHAPES:
        w = _weight(shape, seed=bits)
        q = LSQQuantizer(w, bits, granularity, bucket_size=64, symmetric=symmetric, implementation=implementation)
        with torch.no_grad():
            q.step.mul_(torch.linspace(0.5, 1.5, q.step.numel()))
        codes = q.encode(w)
        assert torch.equal(decode(codes), q(w).detach())
        assert codes.layout == (STEP if symmetric else AFFINE) and codes.n_levels == 2**bits
        assert codes.n_groups == q.step.numel() and int(codes.indices.min()) >= 0


def test_codes_round_trip_through_the_artefact_and_count_one_float_per_step(tmp_path):
    g = torch.Generator().manual_seed(4)
    weights = {"conv.weight": torch.randn(8, 3, 3, 3, generator=g), "fc.weight": torch.randn(10, 30, generator=g)}
    bank = LSQQuantizers(weights, 4, granularity="bucket", bucket_size=64)
    codes = bank.encode(weights)
    codes["fc.weight"] = LSQQuantizer(weights["fc.weight"], 4, "channel", symmetric=False).encode(weights["fc.weight"])
    state = {**weights, "fc.bias": torch.randn(10, generator=g)}
    path = tmp_path / "m.qda"
    export_artefact(path, state, codes)
    loaded, loaded_codes, _ = load_artefact(path)
    for name, c in codes.items():
        got = loaded_codes[name]
        assert torch.equal(loaded[name], decode(c)), name
        assert (got.layout, got.bucket_size, got.axis, got.quant_min) == (c.layout, c.bucket_size, c.axis, c.quant_min)
        assert torch.equal(got.indices, c.indices) and torch.equal(got.scale, c.scale)
    assert loaded_codes["conv.weight"].zero_point is None
    assert torch.equal(loaded_codes["fc.weight"].zero_point, codes["fc.weight"].zero_point)
    # analytic size: one fp32 per step (4 buckets of conv), scale and zero point per channel (10 of fc)
    sizes = model_sizes(state, codes)
    assert codes["conv.weight"].n_groups == 4  # ceil(216 / 64)
    assert sizes["scale_bytes"] == 4 * 4 + 8 * 10
    assert sizes["size_analytic"] == pytest.approx(4 * 10 + sizes["huffman_bits_per_weight"] * 516 / 8 + 96)


def test_quantizer_bank_holds_every_step_in_its_state_dict():
    weights = {"a.weight": _weight((4, 5)), "b.weight": _weight((6,), seed=1)}
    bank = LSQQuantizers(weights, 3, granularity="channel")
    assert [p.shape for p in bank.steps()] == [torch.Size([4]), torch.Size([6])]
    assert set(bank.state_dict()) == {"quantizers.0.step", "quantizers.1.step"}
    out = bank(weights)
    assert torch.equal(out["b.weight"], bank["b.weight"](weights["b.weight"]))
    other = LSQQuantizers(weights, 3, granularity="channel")
    with torch.no_grad():
        other.steps()[0].mul_(2)
    bank.load_state_dict(other.state_dict())
    assert torch.equal(bank.steps()[0], other.steps()[0])


def test_learning_the_step_reduces_the_quantization_error():
    # minimising ||Q(w) - w||^2 over the step alone: LSQ's gradient must move it the right way
    w = torch.randn(2000, generator=torch.Generator().manual_seed(7))
    # by plain gradient descent (lr 10 against g = 1/sqrt(2000 * 3)): from 2 mean|w| / sqrt(3) = 0.92 the
    # step settles near 0.58 and the error falls from 0.072 to 0.039
    q = LSQQuantizer(w, 3)

    def error():
        return ((q(w) - w) ** 2).mean()

    start = error().item()
    for _ in range(60):
        q.step.grad = None
        error().backward()
        with torch.no_grad():
            q.step -= 10.0 * q.step.grad
    assert error().item() < 0.6 * start
    assert 0.5 < q.step.item() < 0.7


def test_bad_options_are_named():
    w = torch.randn(10)
    with pytest.raises(ValueError, match="granularity"):
        LSQQuantizer(w, 4, "row")
    with pytest.raises(ValueError, match="implementation"):
        LSQQuantizer(w, 4, implementation="cuda")
    with pytest.raises(ValueError, match="bucket_size"):
        LSQQuantizer(w, 4, "bucket", bucket_size=None)
    with pytest.raises(ValueError, match="clipping"):
        LSQQuantizer(w, 4, clipping="soft")
    with pytest.raises(ValueError, match="clipping='paper' needs"):
        LSQQuantizer(w, 4, implementation="torch", clipping="paper")
    with pytest.raises(ValueError, match="shape"):
        LSQQuantizer(w, 4)(torch.randn(11))
