"""The distillation loss (qd/distill.py; paper notes 1.6 and ambiguity 5.4).

The reference values are written out with ``math.exp``/``math.log`` on Python floats: softmax,
cross-entropy and KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c), for a 2x3 example.
"""
from __future__ import annotations

import math

import pytest
import torch

from qd.distill import distillation_loss, soft_target_kl

F64 = torch.float64
S = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]]  # student logits, N=2, C=3
T_ = [[0.5, 1.5, -0.5], [2.0, 0.0, 1.0]]  # teacher logits
Y = [1, 2]


def _softmax(row, temp=1.0):
    e = [math.exp(v / temp) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _kl_sum(s, t, temp):
    """sum over rows of KL(softmax(t/T) || softmax(s/T))."""
    total = 0.0
    for rs, rt in zip(s, t):
        ps, pt = _softmax(rs, temp), _softmax(rt, temp)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    return total


def _ce(s, y):
    return sum(-math.log(_softmax(r)[k]) for r, k in zip(s, y)) / len(s)


def _t(v, grad=False):
    return torch.tensor(v, dtype=F64, requires_grad=grad)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("weight", [0.0, 0.3, 0.7, 1.0])
def test_hand_computed_loss(temp, weight):
    kl = _kl_sum(S, T_, temp)
    ce = _ce(S, Y)
    n, c = 2, 3
    exp_batchmean = (1 - weight) * ce + weight * temp**2 * kl / n
    exp_legacy = (1 - weight) * ce + weight * temp**2 * kl / (n * c)
    got_b = distillation_loss(_t(S), _t(T_), torch.tensor(Y), temp, weight, reduction="batchmean")
    got_l = distillation_loss(_t(S), _t(T_), torch.tensor(Y), temp, weight, reduction="legacy_mean")
    assert got_b.item() == pytest.approx(exp_batchmean, rel=1e-12, abs=1e-14)
    assert got_l.item() == pytest.approx(exp_legacy, rel=1e-12, abs=1e-14)


def test_soft_term_reductions_and_kl_value():
    # kl_sum at T=2 is positive (the two rows disagree), batchmean = sum/N, legacy = sum/(N*C)
    kl = _kl_sum(S, T_, 2.0)
    assert kl > 0.01
    assert soft_target_kl(_t(S), _t(T_), 2.0, "batchmean").item() == pytest.approx(kl / 2, rel=1e-12)
    assert soft_target_kl(_t(S), _t(T_), 2.0, "legacy_mean").item() == pytest.approx(kl / 6, rel=1e-12)


def test_default_reduction_is_batchmean():
    a = distillation_loss(_t(S), _t(T_), torch.tensor(Y), 2.0, 0.7)
    b = distillation_loss(_t(S), _t(T_), torch.tensor(Y), 2.0, 0.7, reduction="batchmean")
    assert a.item() == b.item()


def test_temperature_squared_factor():
    # weight 1: loss = T^2 * KL_T / N exactly; so loss / KL_T(batchmean) = T^2
    for temp in (0.5, 1.0, 3.0):
        loss = distillation_loss(_t(S), _t(T_), torch.tensor(Y), temp, 1.0, "batchmean")
        assert loss.item() / soft_target_kl(_t(S), _t(T_), temp, "batchmean").item() == pytest.approx(temp**2, rel=1e-12)


def test_weight_zero_is_cross_entropy_and_ignores_teacher():
    a = distillation_loss(_t(S), _t(T_), torch.tensor(Y), 2.0, 0.0)
    b = distillation_loss(_t(S), _t([[9.0, -9.0, 0.0], [0.0, 0.0, 0.0]]), torch.tensor(Y), 2.0, 0.0)
    assert a.item() == pytest.approx(_ce(S, Y), rel=1e-13)
    assert a.item() == b.item()


def test_weight_one_ignores_labels():
    a = distillation_loss(_t(S), _t(T_), torch.tensor([0, 0]), 2.0, 1.0)
    b = distillation_loss(_t(S), _t(T_), torch.tensor([2, 1]), 2.0, 1.0)
    assert a.item() == b.item() == pytest.approx(4 * _kl_sum(S, T_, 2.0) / 2, rel=1e-12)


def test_identical_logits_soft_term_zero():
    for red in ("batchmean", "legacy_mean"):
        assert abs(soft_target_kl(_t(S), _t(S), 3.0, red).item()) < 1e-15
        loss = distillation_loss(_t(S), _t(S), torch.tensor(Y), 3.0, 0.7, red)
        assert loss.item() == pytest.approx(0.3 * _ce(S, Y), rel=1e-12)


def test_teacher_detached_and_student_gradient_closed_form():
    """d/dz_s [T^2 KL(softmax(z_t/T) || softmax(z_s/T)) / N] = T (softmax(z_s/T) - softmax(z_t/T)) / N."""
    s, t = _t(S, grad=True), _t(T_, grad=True)
    temp = 2.0
    loss = distillation_loss(s, t, torch.tensor(Y), temp, 1.0, "batchmean")
    loss.backward()
    assert t.grad is None  # nothing flows into the teacher
    exp = [[temp * (a - b) / 2 for a, b in zip(_softmax(rs, temp), _softmax(rt, temp))] for rs, rt in zip(S, T_)]
    torch.testing.assert_close(s.grad, _t(exp), rtol=1e-12, atol=1e-14)
    # the whole loss with weight 0.7: the hard part adds 0.3 * (softmax(z_s) - onehot(y)) / N
    s2, t2 = _t(S, grad=True), _t(T_, grad=True)
    distillation_loss(s2, t2, torch.tensor(Y), temp, 0.7, "batchmean").backward()
    assert t2.grad is None
    hard = [[(p - (1.0 if k == y else 0.0)) / 2 for k, p in enumerate(_softmax(r))] for r, y in zip(S, Y)]
    exp2 = [[0.7 * a + 0.3 * b for a, b in zip(ra, rb)] for ra, rb in zip(exp, hard)]
    torch.testing.assert_close(s2.grad, _t(exp2), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", ["batchmean", "legacy_mean"])
def test_mask_equals_kept_rows_only(reduction):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 4, 5, generator=g, dtype=F64)  # (batch, positions, classes)
    t = torch.randn(2, 4, 5, generator=g, dtype=F64)
    y = torch.randint(0, 5, (2, 4), generator=g)
    mask = torch.tensor([[True, False, True, True], [False, True, False, False]])
    got = distillation_loss(s, t, y, 2.0, 0.7, reduction, mask=mask)
    kept = distillation_loss(s[mask], t[mask], y[mask], 2.0, 0.7, reduction)
    assert got.item() == pytest.approx(kept.item(), rel=1e-13)
    # the masked rows matter: dropping a different set changes the value
    other = distillation_loss(s, t, y, 2.0, 0.7, reduction, mask=~mask)
    assert other.item() != pytest.approx(got.item(), rel=1e-6)
    # hand count for the divisor: 4 kept rows, 5 classes
    kl_sum = soft_target_kl(s[mask], t[mask], 2.0, "batchmean").item() * 4
    soft = soft_target_kl(s, t, 2.0, reduction, mask=mask).item()
    assert soft == pytest.approx(kl_sum / (4 if reduction == "batchmean" else 20), rel=1e-12)


def test_unmasked_3d_equals_flattened():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 2, 4, generator=g, dtype=F64)
    t = torch.randn(3, 2, 4, generator=g, dtype=F64)
    y = torch.randint(0, 4, (3, 2), generator=g)
    a = distillation_loss(s, t, y, 1.5, 0.6, "legacy_mean")
    b = distillation_loss(s.reshape(6, 4), t.reshape(6, 4), y.reshape(6), 1.5, 0.6, "legacy_mean")
    assert a.item() == pytest.approx(b.item(), rel=1e-14)


def test_invalid_reduction():
    with pytest.raises(ValueError, match="reduction"):
        distillation_loss(_t(S), _t(T_), torch.tensor(Y), 2.0, 0.7, reduction="foo")
    with pytest.raises(ValueError, match="reduction"):
        soft_target_kl(_t(S), _t(T_), 2.0, "mean")
