"""Claim 6: weight quantization acts like additive Gaussian noise on layer outputs, with a variance set
by the number of levels: the paper's statement itself, tested as it is made.

The paper's statement (section 2, notes 1.3) is about *stochastic* uniform quantization, over its
random draws, for a *fixed* input: the error a layer's output takes, ``e = (Q(w) - w) . x``, is a sum
of independent zero-mean terms, one per weight, asymptotically normal (Lindeberg/Lyapunov), with
variance ``sigma^2 = sum_i x_i^2 step_i^2 f_i (1 - f_i)``, where ``step_i = (max - min) / (s - 1)`` of
weight i's bucket and ``f_i`` its fractional position between two levels: the variance depends on the
level count ``s``. So, for each conv and linear layer of a trained full-precision (distilled) student:

* the inputs are fixed: ``noise_examples`` test examples drawn once (``report.bootstrap_seed``;
  ``qd.report.claims.weights.drawn_examples``) through the full-precision model,
  ``noise_units`` output units (channel x position) sampled per layer;
* ``noise_draws`` draws of the stochastically quantized weights at each bit width of the preset
  (``qd.quant.quantize_uniform(stochastic=True)``, the preset's bucket size) give, per unit, a sample
  of the output error over the draws;
* shape: each unit's error standardised over the draws, pooled; skewness and excess kurtosis (0 and 0
  for a Gaussian), with intervals from a bootstrap over the draws, must lie within
  ``noise_max_skewness`` and ``noise_max_excess_kurtosis``;
* size: the variance over the draws against the formula's ``sigma^2``, their ratio (interval: the same
  bootstrap) within a factor ``noise_variance_factor`` of 1 at every level count, and the variance
  falling as bits grow.

The data only choose the fixed inputs; the spread is the quantizer's. A layer of small fan-in (few
terms in the sum) can miss the shape test: the statement is asymptotic, and the table gives each
layer's fan-in beside it. Every preset trains with deterministic rounding: the draws here are the
report's own, on the trained weights, not the runs'.

Try: ``pytest tests/test_claims_noise.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from qd.quant import QuantCodes, quantize_uniform
from qd.report.integer import LAYERS, apply_weight
from qd.report.stats import FAIL, INCONCLUSIVE, PASS, combine

def step_per_weight(c: QuantCodes) -> torch.Tensor:
    """The quantization step of every weight: its bucket's range over ``levels - 1``."""
    n = c.indices.numel()
    d = c.bucket_size if c.bucket_size is not None else max(n, 1)
    step = (c.hi - c.lo).double() / max(c.n_levels - 1, 1)
    return step[torch.arange(n) // d].view(c.shape)


def rounding_variance(w: torch.Tensor, bits: int, bucket: int | None) -> torch.Tensor:
    """The variance of each weight's stochastic-rounding error, the paper's per-term variance:
    ``step^2 f (1 - f)``, ``f`` the weight's fractional position between its two neighbouring levels."""
    from qd.quant import bucket_scaling, from_buckets, to_buckets

    b = to_buckets(w.detach().double(), bucket)
    lo, hi, divisor = bucket_scaling(b)
    steps = 2**bits - 1
    u = (b - lo) / divisor * steps
    f = u - torch.floor(u)
    step = (hi - lo) / steps
    return from_buckets(step**2 * f * (1 - f), w)


@dataclass
class LayerNoise:
    model: str
    layer: str
    bits: int
    examples: int  # fixed inputs
    units: int  # output units (x inputs) measured
    draws: int
    fan_in: int
    skewness: tuple[float, float, float]  # estimate, low, high
    kurtosis: tuple[float, float, float]
    variance: float  # of the output error over the draws, mean over units
    predicted: float  # the paper's formula, mean over units
    ratio: tuple[float, float, float]
    shape_verdict: str
    size_verdict: str

    @property
    def verdict(self) -> str:
        return combine([self.shape_verdict, self.size_verdict], "all")


def _within(low: float, high: float, bound: float) -> str:
    """PASS when [low, high] lies inside (-bound, bound), FAIL when wholly outside it."""
    if -bound < low and high < bound:
        return PASS
    if low >= bound or high <= -bound:
        return FAIL
    return INCONCLUSIVE


def _ratio_within(low: float, high: float, factor: float) -> str:
    if 1 / factor < low and high < factor:
        return PASS
    if low >= factor or high <= 1 / factor:
        return FAIL
    return INCONCLUSIVE


def _quantile(x: np.ndarray, conf: float) -> tuple[float, float]:
    a = (1 - conf) / 2
    lo, hi = np.quantile(x, [a, 1 - a])
    return float(lo), float(hi)


def shape_and_size(errors: np.ndarray, predicted: np.ndarray, cfg: dict, seed: int = 0):
    """Skewness, excess kurtosis and mean-square ratio of per-unit errors (draws, units) against the
    predicted variance (units,), each with a bootstrap interval over the draws (standardisation fixed at
    the full sample's). The errors are zero-mean by construction (unbiased rounding): the mean square over
    the draws is their variance."""
    n = errors.shape[0]
    mean, std = errors.mean(0), errors.std(0)
    keep = (std > 1e-12 * max(float(np.abs(errors).max()), 1e-30)) & (predicted > 0)
    z = (errors[:, keep] - mean[keep]) / std[keep]
    s3, s4 = (z**3).mean(1), (z**4).mean(1)  # per draw, averaged over units
    sq = (errors[:, keep] ** 2).mean(1)
    pr = float(predicted[keep].mean()) if keep.any() else float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(cfg["bootstrap_samples"], n))
    conf = cfg["confidence"]
    skew = (float(s3.mean()), *_quantile(s3[draws].mean(1), conf))
    kurt = (float(s4.mean() - 3), *_quantile(s4[draws].mean(1) - 3, conf))
    ratio = (float(sq.mean() / pr), *_quantile(sq[draws].mean(1) / pr, conf))
    return skew, kurt, float(sq.mean()), pr, ratio, int(keep.sum())


@torch.no_grad()
def layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each conv and linear layer of ``model`` gets on the fixed inputs ``x`` (float64)."""
    model.eval()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LAYERS)}
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def pre(mod, inp):
            seen[name] = inp[0].detach().double()
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def layer_noise(fp_model: nn.Module, bits_list, x: torch.Tensor, cfg: dict, bucket: int | None = 256,
                name: str = "", seed: int = 0, layers: set[str] | None = None) -> list[LayerNoise]:
    """Claim 6 on every conv and linear layer of ``fp_model`` (or the named ``layers``): the output error
    of ``cfg['noise_draws']`` stochastic quantizations of its weight at each of ``bits_list``, on the
    fixed inputs ``x``, against the paper's formula."""
    inputs = layer_inputs(fp_model, x)
    modules = dict(fp_model.named_modules())
    gen = torch.Generator().manual_seed(seed)
    out = []
    for lname, xin in inputs.items():
        if layers is not None and lname not in layers:
            continue
        mod = modules[lname]
        w = mod.weight.detach().double()
        y = apply_weight(mod, xin, w).flatten(1)
        k = min(cfg["noise_units"], y.shape[1])
        units = torch.randperm(y.shape[1], generator=gen)[:k]
        fan_in = int(w[0].numel())
        for bits in sorted(bits_list):
            pred = apply_weight(mod, xin * xin, rounding_variance(w, bits, bucket)).flatten(1)[:, units]
            errs = []
            for _ in range(cfg["noise_draws"]):
                q = quantize_uniform(w, bits, bucket, stochastic=True, generator=gen)
                errs.append(apply_weight(mod, xin, q - w).flatten(1)[:, units].reshape(-1))
            e = torch.stack(errs).numpy()
            skew, kurt, var, pr, ratio, kept = shape_and_size(e, pred.reshape(-1).numpy(), cfg, seed)
            shape = combine([_within(skew[1], skew[2], cfg["noise_max_skewness"]),
                             _within(kurt[1], kurt[2], cfg["noise_max_excess_kurtosis"])], "all")
            size = _ratio_within(ratio[1], ratio[2], cfg["noise_variance_factor"])
            out.append(LayerNoise(name, lname, bits, xin.shape[0], kept, e.shape[0], fan_in, skew, kurt, var, pr,
                                  ratio, shape, size))
    return out


def falls_with_bits(rows: list[LayerNoise]) -> list[str]:
    """Layers whose measured mean-square error does not fall strictly as bits grow."""
    bad = []
    by_layer: dict = {}
    for r in rows:
        by_layer.setdefault((r.model, r.layer), []).append(r)
    for (model, layer), rs in by_layer.items():
        rs = sorted(rs, key=lambda r: r.bits)
        if any(a.variance <= b.variance for a, b in zip(rs, rs[1:])):
            bad.append(f"{model} {layer}")
    return bad


def noise_verdict(rows: list[LayerNoise]) -> str:
    if not rows:
        return INCONCLUSIVE
    v = combine([r.verdict for r in rows], "all")
    return FAIL if falls_with_bits(rows) else v


def noise_line(r: LayerNoise) -> str:
    s, k, q = r.skewness, r.kurtosis, r.ratio
    return (f"{r.model} `{r.layer}` {r.bits}-bit (fan-in {r.fan_in}; {r.draws} draws x {r.units} units of "
            f"{r.examples} fixed inputs): skewness {s[0]:+.3f} [{s[1]:+.3f}, {s[2]:+.3f}], excess kurtosis "
            f"{k[0]:+.3f} [{k[1]:+.3f}, {k[2]:+.3f}] -> shape {r.shape_verdict}; variance {r.variance:.3e} vs the "
            f"paper's formula {r.predicted:.3e}, ratio {q[0]:.3f} [{q[1]:.3f}, {q[2]:.3f}] -> size {r.size_verdict}")


def noise_rows(rows: list[LayerNoise]) -> list[dict]:
    """One table row per layer and bit width (``tables/<task>_noise.csv``)."""
    return [{"model": r.model, "layer": r.layer, "bits": r.bits, "examples": r.examples, "units": r.units,
             "draws": r.draws, "fan_in": r.fan_in,
             "skewness": r.skewness[0], "skewness_low": r.skewness[1], "skewness_high": r.skewness[2],
             "excess_kurtosis": r.kurtosis[0], "kurtosis_low": r.kurtosis[1], "kurtosis_high": r.kurtosis[2],
             "variance": r.variance, "formula": r.predicted, "ratio": r.ratio[0],
             "ratio_low": r.ratio[1], "ratio_high": r.ratio[2], "shape": r.shape_verdict, "size": r.size_verdict,
             "verdict": r.verdict} for r in rows]
