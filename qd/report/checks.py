"""Claims checked on the saved models themselves rather than on the accuracy table.

* claim 5: uniformly quantized weights sit on ``2**bits`` evenly spaced levels per bucket, the form
  low-precision integer kernels (TensorRT, FPGAs) consume;
* claim 6: quantizing weights with stochastic rounding adds noise to a layer's outputs that is close
  to Gaussian, with a variance that shrinks as the number of levels grows.
"""
from __future__ import annotations

from pathlib import Path

import torch

from qd.data import load_splits
from qd.quant import bucket_scaling, quantize_uniform, to_buckets
from qd.report.claims import FAIL, PASS, Claim
from qd.run import ARTEFACT, load_run_model, model_from_artefact

UNIFORM_METHODS = ("pm", "qt", "qd")


def levels_on_grid(w: torch.Tensor, bits: int, bucket_size: int | None, atol: float = 1e-3) -> tuple[bool, int]:
    """Whether every bucket of ``w`` holds only values ``min + k (max - min) / (2^b - 1)``, and the
    largest number of distinct values seen in one bucket."""
    b = to_buckets(w.detach().double(), bucket_size)
    lo, _, divisor = bucket_scaling(b)
    k = (b - lo) / divisor * (2**bits - 1)
    on_grid = bool(((k - k.round()).abs() <= atol).all())
    s = b.sort(dim=1).values  # distinct values per bucket, counted for all buckets at once
    distinct = int((1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)).max())
    return on_grid, distinct


def claim_uniform_levels(results: Path, runs: list[str]) -> Claim:
    c = Claim("5", "Uniformly quantized students are compatible with low-precision inference (TensorRT, FPGAs).",
              "every quantized tensor of every PM/QT/QD model holds at most 2^bits evenly spaced values per bucket")
    checked, bad = 0, []
    for run in runs:
        model, codes, header = model_from_artefact(results / run / ARTEFACT)
        if header["method"] not in UNIFORM_METHODS:
            continue
        params = dict(model.named_parameters())
        bits, bucket = header["bits"], header["bucket_size"]
        for name in codes:  # the tensors the file stores quantized
            on_grid, distinct = levels_on_grid(params[name], bits, bucket)
            checked += 1
            if not on_grid or distinct > 2**bits:
                bad.append(f"{run}: {name} ({distinct} distinct values, on grid: {on_grid})")
    if not checked:
        return c
    c.verdict = FAIL if bad else PASS
    c.evidence = [f"{checked} quantized tensors checked in {len(runs)} runs"] + bad[:10]
    return c


def _layer_inputs(model: torch.nn.Module, layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def moments(e: torch.Tensor) -> tuple[float, float]:
    """Skewness and excess kurtosis of ``e`` standardised per column (over draws, dim 0)."""
    z = (e - e.mean(0)) / e.std(0).clamp_min(1e-12)
    return float((z**3).mean()), float((z**4).mean() - 3)


def claim_gaussian_noise(run_dir: Path, data: Path, bits_list=(2, 4, 8), draws: int = 400, bucket_size=256,
                         seed: int = 0) -> Claim:
    c = Claim("6", "Weight quantization behaves like additive Gaussian noise on a layer's outputs, with a variance "
                   "that depends on the number of levels.",
              "stochastic uniform quantization of the first fully connected layer of the distilled student: output "
              "error over draws has |skewness| < 0.2 and |excess kurtosis| < 0.5, and its variance falls as bits grow")
    if not (run_dir / ARTEFACT).exists():
        return c
    model = load_run_model(run_dir)
    linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "out_layer"]
    if not linears:
        return c
    layer = linears[0]
    x = _layer_inputs(model, layer, load_splits(data).test[0][:64])
    gen = torch.Generator().manual_seed(seed)
    w = layer.weight.detach().double()
    x = x.double()
    ok, variances = True, []
    for bits in bits_list:
        errs = torch.stack([x @ (quantize_uniform(w, bits, bucket_size, True, gen) - w).T for _ in range(draws)])
        errs = errs.reshape(draws, -1)
        skew, kurt = moments(errs)
        var = float(errs.var(0).mean())
        variances.append(var)
        ok &= abs(skew) < 0.2 and abs(kurt) < 0.5
        c.evidence.append(f"{bits}-bit: skewness {skew:+.3f}, excess kurtosis {kurt:+.3f}, mean variance {var:.3e}")
    falling = all(a > b for a, b in zip(variances, variances[1:]))
    c.evidence.append(f"variance falls with bits: {falling}")
    c.verdict = PASS if ok and falling else FAIL
    return c

