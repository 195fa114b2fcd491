"""Claim 6: weight quantization acts like additive Gaussian noise on layer outputs, with a variance set
by the number of levels.

Measured on trained models with the rounding they were trained with: a PM run is its source
distilled student ``w`` quantized after training, ``Q(w)``, so the pair of saved models gives the
weight error ``Q(w) - w`` of every quantized layer exactly. For each conv and linear layer, the input
``x`` the full-precision model feeds it on the test examples goes through the layer's linear map with
the weight error: the output error ``e = (Q(w) - w) * x``, one value per output unit (channel and
position) and test example. Then, per layer and bit width:

* shape: ``e`` standardised per unit over the test examples and pooled; its skewness and excess
  kurtosis (0 and 0 for a Gaussian), with intervals from a bootstrap over the test examples, must lie
  within ``noise_max_skewness`` and ``noise_max_excess_kurtosis``;
* size: the mean square of ``e`` against the additive-noise model, which treats every weight's error
  as independent with the variance of its rounding: ``step**2 / 12`` for round-to-nearest (error
  uniform over a step), ``step**2 / 6`` for stochastic rounding, ``step = (max - min) / (2**bits - 1)``
  of its bucket; predicted mean square ``sum_j step_j**2 / 12 * x_j**2``. The ratio must lie within a
  factor ``noise_variance_factor`` of 1, and the measured variance must fall as bits grow.

Heavy-tailed or sparse layer inputs make ``e`` far from Gaussian, and correlated weight errors make
the ratio drift from 1: both fail the check.

Try: ``pytest tests/test_claims_noise.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from qd.quant import QuantCodes
from qd.report.integer import LAYERS, apply_weight
from qd.report.stats import FAIL, INCONCLUSIVE, PASS, combine

ROUNDING_VARIANCE = {"deterministic": 1 / 12, "stochastic": 1 / 6}  # of one weight's error, in steps squared


def step_per_weight(c: QuantCodes) -> torch.Tensor:
    """The quantization step of every weight: its bucket's range over ``levels - 1``."""
    n = c.indices.numel()
    d = c.bucket_size if c.bucket_size is not None else max(n, 1)
    step = (c.hi - c.lo).double() / max(c.n_levels - 1, 1)
    return step[torch.arange(n) // d].view(c.shape)


@dataclass
class LayerNoise:
    model: str
    layer: str
    bits: int
    examples: int
    units: int
    skewness: tuple[float, float, float]  # estimate, low, high
    kurtosis: tuple[float, float, float]
    mean_square: float
    predicted: float
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
    """Skewness, excess kurtosis and mean-square ratio of per-unit errors (examples, units), each with
    a bootstrap interval over the examples (standardisation fixed at the full sample's)."""
    n = errors.shape[0]
    mean, std = errors.mean(0), errors.std(0)
    keep = std > 1e-12 * max(float(np.abs(errors).max()), 1e-30)
    z = (errors[:, keep] - mean[keep]) / std[keep]
    s3, s4 = (z**3).mean(1), (z**4).mean(1)  # per example, averaged over units
    sq, pr = (errors**2).mean(1), predicted.mean(1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(cfg["bootstrap_samples"], n))
    conf = cfg["confidence"]
    skew = (float(s3.mean()), *_quantile(s3[draws].mean(1), conf))
    kurt = (float(s4.mean() - 3), *_quantile(s4[draws].mean(1) - 3, conf))
    ratio = (float(sq.mean() / pr.mean()), *_quantile(sq[draws].mean(1) / pr[draws].mean(1), conf))
    return skew, kurt, float(sq.mean()), float(pr.mean()), ratio, int(keep.sum())


@torch.no_grad()
def layer_noise(fp_model: nn.Module, quantized: dict[int, tuple[nn.Module, dict[str, QuantCodes]]], x: torch.Tensor,
                cfg: dict, rounding: str = "deterministic", name: str = "", seed: int = 0,
                batch: int = 256) -> list[LayerNoise]:
    """Output-error statistics of every layer quantized in the models ``quantized`` (bits -> (model,
    codes)), fed with the inputs the full-precision ``fp_model`` gives each layer on ``x``."""
    if rounding not in ROUNDING_VARIANCE:
        raise ValueError(f"unknown rounding {rounding!r}; known: {sorted(ROUNDING_VARIANCE)}")
    fp_model.eval()
    fp_layers = {n: m for n, m in fp_model.named_modules() if isinstance(m, LAYERS)}
    plan = {}  # layer -> bits -> (weight error, per-weight rounding variance)
    for bits, (qm, codes) in quantized.items():
        q_params = dict(qm.named_parameters())
        for lname, m in fp_layers.items():
            c = codes.get(f"{lname}.weight")
            if c is None or getattr(c, "axis", None) is not None:  # steps are per flat bucket here
                continue
            err = (q_params[f"{lname}.weight"].detach().double() - m.weight.detach().double())
            var = step_per_weight(c) ** 2 * ROUNDING_VARIANCE[rounding]
            plan.setdefault(lname, {})[bits] = (err, var)
    gen = torch.Generator().manual_seed(seed)
    units: dict[str, torch.Tensor] = {}
    errs: dict = {(ln, b): [] for ln in plan for b in plan[ln]}
    preds: dict = {(ln, b): [] for ln in plan for b in plan[ln]}

    def hook(lname):
        def pre(mod, inp):
            xl = inp[0].detach().double()
            for bits, (err, var) in plan[lname].items():
                e = apply_weight(mod, xl, err).flatten(1)
                p = apply_weight(mod, xl * xl, var).flatten(1)
                if lname not in units:
                    k = min(cfg["noise_units"], e.shape[1])
                    units[lname] = torch.randperm(e.shape[1], generator=gen)[:k]
                errs[(lname, bits)].append(e[:, units[lname]])
                preds[(lname, bits)].append(p[:, units[lname]])
        return pre

    handles = [fp_layers[ln].register_forward_pre_hook(hook(ln)) for ln in plan]
    try:
        for i in range(0, len(x), batch):
            fp_model(x[i:i + batch])
    finally:
        for h in handles:
            h.remove()
    out = []
    for lname in plan:
        for bits in sorted(plan[lname]):
            e = torch.cat(errs[(lname, bits)]).numpy()
            p = torch.cat(preds[(lname, bits)]).numpy()
            skew, kurt, ms, pr, ratio, kept = shape_and_size(e, p, cfg, seed)
            shape = combine([_within(skew[1], skew[2], cfg["noise_max_skewness"]),
                             _within(kurt[1], kurt[2], cfg["noise_max_excess_kurtosis"])], "all")
            size = _ratio_within(ratio[1], ratio[2], cfg["noise_variance_factor"])
            out.append(LayerNoise(name, lname, bits, e.shape[0], kept, skew, kurt, ms, pr, ratio, shape, size))
    return out


def falls_with_bits(rows: list[LayerNoise]) -> list[str]:
    """Layers whose measured mean-square error does not fall strictly as bits grow."""
    bad = []
    by_layer: dict = {}
    for r in rows:
        by_layer.setdefault((r.model, r.layer), []).append(r)
    for (model, layer), rs in by_layer.items():
        rs = sorted(rs, key=lambda r: r.bits)
        if any(a.mean_square <= b.mean_square for a, b in zip(rs, rs[1:])):
            bad.append(f"{model} {layer}")
    return bad


def noise_verdict(rows: list[LayerNoise]) -> str:
    if not rows:
        return INCONCLUSIVE
    v = combine([r.verdict for r in rows], "all")
    return FAIL if falls_with_bits(rows) else v


def noise_line(r: LayerNoise) -> str:
    s, k, q = r.skewness, r.kurtosis, r.ratio
    return (f"{r.model} `{r.layer}` {r.bits}-bit ({r.examples} examples x {r.units} units): skewness {s[0]:+.3f} "
            f"[{s[1]:+.3f}, {s[2]:+.3f}], excess kurtosis {k[0]:+.3f} [{k[1]:+.3f}, {k[2]:+.3f}] -> shape "
            f"{r.shape_verdict}; mean square {r.mean_square:.3e} vs noise model {r.predicted:.3e}, ratio {q[0]:.2f} "
            f"[{q[1]:.2f}, {q[2]:.2f}] -> size {r.size_verdict}")


def noise_rows(rows: list[LayerNoise]) -> list[dict]:
    """One table row per layer and bit width (``tables/<task>_noise.csv``)."""
    return [{"model": r.model, "layer": r.layer, "bits": r.bits, "examples": r.examples, "units": r.units,
             "skewness": r.skewness[0], "skewness_low": r.skewness[1], "skewness_high": r.skewness[2],
             "excess_kurtosis": r.kurtosis[0], "kurtosis_low": r.kurtosis[1], "kurtosis_high": r.kurtosis[2],
             "mean_square": r.mean_square, "noise_model": r.predicted, "ratio": r.ratio[0],
             "ratio_low": r.ratio[1], "ratio_high": r.ratio[2], "shape": r.shape_verdict, "size": r.size_verdict,
             "verdict": r.verdict} for r in rows]
