"""Claim 6 as the paper states it: for fixed inputs, the output error of a layer over many draws of its
stochastically quantized weights. A wide layer gives a Gaussian error with the variance of the paper's
formula at every level count (PASS); a layer of tiny fan-in fed one large input does not look Gaussian
(FAIL: the statement is asymptotic); too few draws are INCONCLUSIVE; a variance that does not fall with
the bits fails."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

from qd.quant import quantize_uniform
from qd.report.build import report_settings
from qd.report.noise import falls_with_bits, layer_noise, noise_line, noise_verdict, rounding_variance
from qd.report.stats import FAIL, INCONCLUSIVE, PASS

CFG = {**report_settings(None), "bootstrap_samples": 300, "noise_units": 32, "noise_draws": 300}


def _mlp(fan_in=200):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(fan_in, 50), nn.ReLU(), nn.Linear(50, 10)).eval()


def _x(n, fan_in=200):
    return torch.randn(n, fan_in, generator=torch.Generator().manual_seed(1))


def test_rounding_variance_by_hand_and_by_simulation():
    w = torch.tensor([0.0, 0.25, 1.0, 3.0])  # one bucket, range 3, 2 bits: step 1, levels 0 1 2 3
    assert rounding_variance(w, 2, None).tolist() == pytest.approx([0.0, 0.25 * 0.75, 0.0, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([quantize_uniform(w.double(), 2, None, stochastic=True, generator=g) for _ in range(4000)])
    assert draws.var(0)[1].item() == pytest.approx(0.1875, rel=0.1) and draws.mean(0)[1].item() == pytest.approx(
        0.25, abs=0.03)


def test_wide_layers_give_gaussian_error_of_the_formulas_variance():
    fp = _mlp()
    rows = layer_noise(fp, (2, 4, 8), _x(4), CFG, bucket=256, name="mlp")
    assert len(rows) == 6 and {r.layer for r in rows} == {"0", "2"}
    assert noise_verdict(rows) == PASS, "\n".join(noise_line(r) for r in rows)
    first = sorted((r for r in rows if r.layer == "0"), key=lambda r: r.bits)
    assert all(abs(r.ratio[0] - 1) < 0.1 for r in first) and first[0].fan_in == 200
    # the variance follows the formula as the level count changes: about (2^4 - 1)^2 / (2^2 - 1)^2 = 25x
    assert first[0].variance / first[1].variance == pytest.approx(first[0].predicted / first[1].predicted, rel=0.15)
    assert 10 < first[0].predicted / first[1].predicted < 40


def test_tiny_fan_in_with_one_large_input_is_not_gaussian():
    torch.manual_seed(0)
    fp = nn.Sequential(nn.Linear(2, 8)).eval()
    x = torch.tensor([[10.0, 0.0], [0.0, 10.0]])  # one term in each sum: a two-point error, not a Gaussian
    rows = layer_noise(fp, (2,), x, CFG, bucket=None, name="tiny")
    assert rows[0].shape_verdict == FAIL and noise_verdict(rows) == FAIL, noise_line(rows[0])


def test_too_few_draws_are_inconclusive():
    fp = _mlp()
    rows = layer_noise(fp, (2,), _x(1), {**CFG, "noise_draws": 20, "noise_units": 4}, name="few")
    assert noise_verdict(rows) == INCONCLUSIVE, "\n".join(noise_line(r) for r in rows)


def test_variance_must_fall_with_bits():
    fp = _mlp()
    rows = layer_noise(fp, (2, 4), _x(2), CFG, name="m", layers={"0"})
    assert falls_with_bits(rows) == [] and noise_verdict(rows) == PASS
    swapped = [dataclasses.replace(rows[0], bits=4), dataclasses.replace(rows[1], bits=2)]
    assert falls_with_bits(swapped) == ["m 0"] and noise_verdict(swapped) == FAIL
