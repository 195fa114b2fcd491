"""Claim 6 on small models whose layer inputs decide the answer: Gaussian inputs give Gaussian output
errors of the predicted size (PASS), sparse heavy-tailed inputs do not (FAIL), errors that do not
behave like independent rounding noise fail the size test, and too few examples are INCONCLUSIVE."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from qd.quant import decode, encode_uniform
from qd.report.build import report_settings
from qd.report.noise import falls_with_bits, layer_noise, noise_line, noise_verdict, step_per_weight
from qd.report.stats import FAIL, INCONCLUSIVE, PASS

CFG = {**report_settings(None), "bootstrap_samples": 500, "noise_units": 64}


def _pm(fp: nn.Module, bits_list=(2, 4, 8), bucket=256) -> dict:
    """The full-precision model quantized after training (PM) at each bit width: model and codes."""
    out = {}
    for bits in bits_list:
        m = copy.deepcopy(fp)
        codes = {}
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith("weight"):
                    codes[n] = encode_uniform(p, bits, bucket)
                    p.copy_(decode(codes[n]))
        out[bits] = (m, codes)
    return out


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(200, 50), nn.ReLU(), nn.Linear(50, 10)).eval()


def _x(n, kind="gauss"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 200, generator=g)
    if kind == "sparse":  # one input in a hundred is non-zero, and large
        x = x * (torch.rand(n, 200, generator=g) < 0.01) * 10
    return x


def test_step_per_weight_by_hand():
    c = encode_uniform(torch.tensor([0.0, 3.0, 1.0, 10.0, 12.0, 16.0]), 2, 3)
    # buckets [0, 3, 1] (range 3) and [10, 12, 16] (range 6), 4 levels: steps 1 and 2
    assert step_per_weight(c).tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_gaussian_inputs_pass():
    fp = _mlp()
    rows = layer_noise(fp, _pm(fp), _x(1000), CFG, name="mlp")
    assert len(rows) == 6 and {r.layer for r in rows} == {"0", "2"}
    assert noise_verdict(rows) == PASS, "\n".join(noise_line(r) for r in rows)
    first = [r for r in rows if r.layer == "0"]
    # the independent-rounding model predicts the error's size within a few per cent at every width
    assert all(abs(r.ratio[0] - 1) < 0.1 for r in first)
    # and the variance falls about 4x per extra bit: (2^4 - 1)^2 / (2^2 - 1)^2 = 25
    assert first[0].mean_square / first[1].mean_square == pytest.approx(25, rel=0.15)


def test_sparse_heavy_tailed_inputs_fail():
    fp = _mlp()
    rows = layer_noise(fp, _pm(fp), _x(1000, "sparse"), CFG, name="mlp")
    assert noise_verdict(rows) == FAIL
    assert all(r.shape_verdict == FAIL for r in rows if r.layer == "0")
    assert min(r.kurtosis[1] for r in rows if r.layer == "0") > CFG["noise_max_excess_kurtosis"]


def test_errors_unlike_rounding_noise_fail_the_size_test():
    """Every weight moved by the same half step: the errors add up coherently on positive inputs, far
    above what independent rounding errors would give."""
    fp = _mlp()
    pm = _pm(fp, (4,))
    model, codes = pm[4]
    shifted = copy.deepcopy(fp)
    with torch.no_grad():
        for n, p in shifted.named_parameters():
            if n in codes:
                p.add_(step_per_weight(codes[n]).float() / 2)
    x = _x(1000).abs()
    rows = layer_noise(fp, {4: (shifted, codes)}, x, CFG, name="shifted")
    assert rows[0].size_verdict == FAIL and rows[0].ratio[1] > CFG["noise_variance_factor"]


def test_variance_must_fall_with_bits():
    fp = _mlp()
    pm = _pm(fp, (2, 4))
    swapped = {2: pm[4], 4: pm[2]}  # the 4-bit model filed as 2 bits and vice versa
    rows = layer_noise(fp, swapped, _x(300), CFG, name="swapped")
    assert falls_with_bits(rows) == ["swapped 0", "swapped 2"]
    assert noise_verdict(rows) == FAIL


def test_too_few_examples_are_inconclusive():
    fp = _mlp()
    rows = layer_noise(fp, _pm(fp), _x(40), CFG, name="few")
    assert noise_verdict(rows) == INCONCLUSIVE, "\n".join(noise_line(r) for r in rows)


def test_stochastic_rounding_doubles_the_predicted_variance():
    fp = _mlp()
    pm = _pm(fp, (4,))
    det = layer_noise(fp, pm, _x(200), CFG)[0]
    sto = layer_noise(fp, pm, _x(200), CFG, rounding="stochastic")[0]
    assert sto.predicted == pytest.approx(2 * det.predicted)
    with pytest.raises(ValueError, match="rounding"):
        layer_noise(fp, pm, _x(10), CFG, rounding="nearest-even")
