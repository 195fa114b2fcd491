"""Claim 5: uniformly quantized students run on low-precision integer inference stacks.

The check runs every quantized conv and linear layer of a saved student from its *codes* alone, as an
integer kernel with per-group scales would, and compares the result with the simulated model
(fp32 arithmetic on the decoded weights) that the suite evaluates:

* weights: the stored level index ``q`` (an integer in ``0 .. 2**bits - 1``) of every element, and per
  bucket a scale ``(hi - lo) / (2**bits - 1)`` and an offset ``lo``: ``w = lo + scale * q``;
* activations: each such layer's input quantized to signed ``activation_bits`` integers with one
  scale per layer, calibrated as the largest magnitude the simulated model sees on the examples;
* products: ``q_w * q_x`` summed per output channel and per bucket segment (the part of a bucket that
  lies in one output channel) as integers; a bucket of 256 elements over the flattened tensor can
  straddle two output channels, so one channel's dot product is a sum over the segments of the
  buckets it meets, each rescaled by its own scale and offset:
  ``y = s_x * sum_seg (scale_seg * sum q_w q_x + lo_seg * sum q_x) + bias``.

The integer sums are exact: they are computed on float64 tensors holding integers, whose sums stay
below 2**53; the largest magnitude is reported against the int32 accumulator range.

The paper's layout does not map onto a per-channel int8 stack (one scale per output channel) where a
channel's weights lie in more than one bucket: :func:`channel_layout` counts those channels, and
:func:`per_channel_cost` measures what re-quantizing them per channel (one bucket per output channel,
at the same bits and at 8 bits) costs in accuracy.

Try: ``pytest tests/test_claims_integer.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from qd.quant import QuantCodes, decode, quantize_uniform
from qd.report.stats import FAIL, INCONCLUSIVE, PASS, Interval, clopper_pearson, combine, paired_difference

INT32_MAX = 2**31 - 1
EMULATED = "integer arithmetic emulated in PyTorch (qd.report.integer)"
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


# ---------------------------------------------------------------------- the layout of the codes
def code_bits(c: QuantCodes) -> int:
    """Bits an integer kernel needs for a uniform code of ``n`` evenly spaced levels (``ceil(log2 n)``; a
    signed grid such as -1, 0, 1 has 3), checking that its grid is the even one."""
    n = c.n_levels
    even = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    if not c.uniform or n < 2 or not torch.allclose(c.grid.double(), even):
        raise ValueError("not a uniform code: its levels are not evenly spaced points of [0, 1]")
    return int(np.ceil(np.log2(n)))


def _bucket_of_elements(c: QuantCodes) -> torch.Tensor:
    n = c.indices.numel()
    d = c.bucket_size if c.bucket_size is not None else max(n, 1)
    return torch.arange(n) // d


def channel_layout(c: QuantCodes) -> dict:
    """How the buckets of a weight tensor sit on its output channels (rows of the flattened tensor):
    buckets that straddle channels, and channels whose weights lie in more than one bucket (those a
    per-channel kernel, one scale per channel, cannot express)."""
    out = c.shape[0]
    fan_in = int(np.prod(c.shape[1:])) if len(c.shape) > 1 else 1
    n = c.indices.numel()
    d = c.bucket_size if c.bucket_size is not None else max(n, 1)
    k = torch.arange(c.n_buckets)
    first_row, last_row = (k * d) // fan_in, (torch.clamp((k + 1) * d, max=n) - 1) // fan_in
    r = torch.arange(out)
    first_bucket, last_bucket = (r * fan_in) // d, ((r + 1) * fan_in - 1) // d
    return {"channels": out, "fan_in": fan_in, "buckets": c.n_buckets, "bucket_size": d,
            "straddling_buckets": int((first_row != last_row).sum()),
            "split_channels": int((first_bucket != last_bucket).sum())}


@dataclass
class IntegerLayer:
    """A layer's integer weights and, per output channel, the scale and offset of each *slot*: slot
    ``s`` of channel ``o`` is the part of the ``s``-th bucket that channel ``o`` meets."""

    q: torch.Tensor  # (out, fan_in) the integer level indices, held as float64
    slot: torch.Tensor  # (out, fan_in) slot of every element
    scale: torch.Tensor  # (slots, out) per-segment scale (hi - lo) / (2**bits - 1)
    offset: torch.Tensor  # (slots, out) per-segment offset lo
    shape: tuple[int, ...]
    bits: int

    @property
    def n_slots(self) -> int:
        return self.scale.shape[0]

    @property
    def fan_in(self) -> int:
        return self.q.shape[1]

    def slot_weights(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer weights of slot ``s`` (0 elsewhere) and its 0/1 membership, in the weight's shape."""
        m = self.slot == s
        return (torch.where(m, self.q, torch.zeros_like(self.q)).view(self.shape),
                m.to(torch.float64).view(self.shape))

    def stacked(self, dtype: torch.dtype, max_elements: int = 1 << 24):
        """Groups of slots with their weights stacked along the output channels, ``[q of each slot;
        membership of each slot]``, so one convolution computes every segment sum of a group (groups
        are sized to keep the stack under ``max_elements``)."""
        per_slot = 2 * self.q.numel()
        k = max(1, max_elements // per_slot)
        for first in range(0, self.n_slots, k):
            slots = list(range(first, min(first + k, self.n_slots)))
            qs, members = zip(*(self.slot_weights(s) for s in slots))
            yield slots, torch.cat([*qs, *members]).to(dtype)


def integer_layer(c: QuantCodes) -> IntegerLayer:
    bits = code_bits(c)
    idx = c.indices
    # the code's own level count, not 2**bits: a signed grid such as -1, 0, 1 needs 2 bits for 3 levels,
    # and its step is (hi - lo) / 2
    levels = c.n_levels
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= levels):
        raise ValueError(f"level indices outside 0..{levels - 1}: {int(idx.min())}..{int(idx.max())}")
    out = c.shape[0]
    fan_in = idx.numel() // out
    bucket = _bucket_of_elements(c).view(out, fan_in)
    slot = bucket - bucket[:, :1]  # 0 for the first bucket a channel meets
    n_slots = int(slot.max()) + 1 if idx.numel() else 1
    step = (c.hi - c.lo).double() / (levels - 1)
    lo = c.lo.double()
    last = bucket[:, -1]
    scale = torch.zeros((n_slots, out), dtype=torch.float64)
    offset = torch.zeros_like(scale)
    for s in range(n_slots):
        b = bucket[:, 0] + s
        has = b <= last
        b = torch.where(has, b, torch.zeros_like(b))
        scale[s] = torch.where(has, step[b], torch.zeros_like(step[b]))
        offset[s] = torch.where(has, lo[b], torch.zeros_like(lo[b]))
    return IntegerLayer(idx.view(out, fan_in).double(), slot, scale, offset, tuple(c.shape), bits)


# ---------------------------------------------------------------------- the integer forward pass
def apply_weight(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``module``'s linear map (no bias) with another weight, in the dtype of ``x`` (the integer path here,
    the weight error of claim 6 in ``qd.report.noise``)."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    conv = F.conv2d if isinstance(module, nn.Conv2d) else F.conv1d
    padding = module.padding
    if module.padding_mode != "zeros":
        raise ValueError(f"padding mode {module.padding_mode!r} is not emulated")
    return conv(x, weight, None, module.stride, padding, module.dilation, module.groups)


def _channel_view(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-output-channel values ``t`` (out,) shaped to broadcast over ``y`` (batch, out, ...)."""
    return t.view(1, -1, *([1] * (y.dim() - 2)))


@dataclass
class Accumulators:
    largest: float = 0.0  # largest |integer sum| seen in any segment


def exact_dtype(fan_in: int, weight_levels: int, act_bits: int) -> torch.dtype:
    """The float type in which the layer's integer sums are exact: every partial sum is an integer no
    larger than ``fan_in * (levels - 1) * qmax``, exact in float32 below 2**24 (else float64, 2**53)."""
    bound = fan_in * (weight_levels - 1) * (2 ** (act_bits - 1) - 1)
    if bound >= 2**53:
        raise ValueError(f"integer sums up to {bound:.3g} are not exact in float64")
    return torch.float32 if bound < 2**24 else torch.float64


def integer_output(module: nn.Module, layer: IntegerLayer, x: torch.Tensor, act_scale: float,
                   act_bits: int, acc: Accumulators, bias: torch.Tensor | None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The layer's output from integer weights and integer activations: per segment, the integer sums
    of ``q_w q_x`` and of ``q_x``, rescaled by the segment's scale and offset and the input's scale."""
    qmax = 2 ** (act_bits - 1) - 1
    dtype = dtype or exact_dtype(layer.fan_in, 2**layer.bits, act_bits)
    qx = torch.clamp(torch.round(x.double() / act_scale), -qmax, qmax).to(dtype)
    out = layer.shape[0]
    y = None
    for slots, w in layer.stacked(dtype):
        k = len(slots)
        r = apply_weight(module, qx, w).double()
        r = r.view(r.shape[0], 2, k, out, *r.shape[2:])
        products, sums = r[:, 0], r[:, 1]  # exact integer sums over each segment: (batch, k, out, ...)
        acc.largest = max(acc.largest, float(products.abs().max()) if products.numel() else 0.0)
        view = (1, k, out, *([1] * (r.dim() - 4)))
        part = (layer.scale[slots].view(view) * products + layer.offset[slots].view(view) * sums).sum(1)
        y = part if y is None else y + part
    y = y * act_scale
    if bias is not None:
        y = y + _channel_view(bias.double(), y)
    return y.to(x.dtype)


def quantized_layers(model: nn.Module, codes: dict[str, QuantCodes]) -> list[tuple[str, nn.Module, QuantCodes]]:
    """The conv and linear layers whose weight the file stores as a uniform code."""
    out = []
    for name, m in model.named_modules():
        c = codes.get(f"{name}.weight" if name else "weight")
        # groups along another axis than the flattened rows (``axis`` set) are not flat buckets
        if isinstance(m, LAYERS) and c is not None and c.uniform and getattr(c, "axis", None) is None:
            out.append((name, m, c))
    return out


def _layer_inputs_max(model: nn.Module, layers: list, x: torch.Tensor, batch: int) -> dict[str, float]:
    peak: dict[str, float] = {name: 0.0 for name, _, _ in layers}
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp, name=name: peak.__setitem__(name, max(peak[name], float(inp[0].abs().max()))))
        for name, m, _ in layers]
    try:
        _logits(model, x, batch)
    finally:
        for h in hooks:
            h.remove()
    return peak


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


@torch.no_grad()
def integer_logits(model: nn.Module, codes: dict[str, QuantCodes], x: torch.Tensor, act_bits: int = 8,
                   batch: int = 256) -> tuple[torch.Tensor, dict]:
    """Logits of ``model`` with every uniformly coded conv/linear layer run from its integer codes
    (the other layers, BatchNorm, pooling and activations in fp32), and facts about the run."""
    model.eval()
    layers = quantized_layers(model, codes)
    peaks = _layer_inputs_max(model, layers, x, batch)
    acc = Accumulators()
    ints = {name: integer_layer(c) for name, _, c in layers}
    biases = {name: m.bias.detach() if m.bias is not None else None for name, m, _ in layers}
    qmax = 2 ** (act_bits - 1) - 1

    def hook(name):
        scale = peaks[name] / qmax if peaks[name] > 0 else 1.0
        return lambda mod, inp, out: integer_output(mod, ints[name], inp[0], scale, act_bits, acc, biases[name])

    handles = [m.register_forward_hook(hook(name)) for name, m, _ in layers]
    try:
        logits = _logits(model, x, batch)
    finally:
        for h in handles:
            h.remove()
    n_layers = sum(isinstance(m, LAYERS) for m in model.modules())
    return logits, {"integer_layers": len(layers), "float_layers": n_layers - len(layers),
                    "largest_accumulator": acc.largest, "fits_int32": acc.largest <= INT32_MAX}


def codes_match_weights(model: nn.Module, codes: dict[str, QuantCodes]) -> float:
    """Largest |decoded code - model weight| over the coded layers (0 for a consistent file)."""
    worst = 0.0
    for _, m, c in quantized_layers(model, codes):
        worst = max(worst, float((decode(c).double() - m.weight.detach().double()).abs().max()))
    return worst


# ---------------------------------------------------------------------- what a per-channel stack costs
@torch.no_grad()
def per_channel_model(model: nn.Module, codes: dict[str, QuantCodes], bits: int) -> tuple[nn.Module, int]:
    """A copy whose coded layers with split channels are re-quantized with one bucket per output
    channel (the layout a per-channel kernel takes), at ``bits``; and how many layers changed."""
    import copy

    twin = copy.deepcopy(model)
    changed = 0
    layers = dict((name, c) for name, _, c in quantized_layers(model, codes))
    for name, m in twin.named_modules():
        c = layers.get(name)
        if c is None or channel_layout(c)["split_channels"] == 0:
            continue
        w = m.weight
        fan_in = w[0].numel()
        w.copy_(quantize_uniform(w.reshape(w.shape[0], fan_in), bits, bucket_size=fan_in).view(w.shape))
        changed += 1
    return twin.eval(), changed


# ---------------------------------------------------------------------- the check on one model
@dataclass
class IntegerCheck:
    run: str
    bits: int
    bucket: int | None
    n: int
    simulated_accuracy: float
    integer_accuracy: float
    agreement: float
    agreement_low: float
    agreement_high: float
    max_logit_error: float  # largest |integer - simulated| logit, relative to the largest |logit|
    codes_error: float
    facts: dict
    layout: dict
    interval: Interval
    verdict: str = INCONCLUSIVE
    per_channel: dict = field(default_factory=dict)  # bits -> (accuracy, interval vs the model, layers changed)
    stack: str = EMULATED  # what ran the integer path


def check_integer_model(model: nn.Module, codes: dict[str, QuantCodes], x: torch.Tensor, y: torch.Tensor,
                        cfg: dict, run: str = "", bucket: int | None = None, seed: int = 0,
                        stack: tuple[torch.Tensor, dict, str] | None = None) -> IntegerCheck:
    """Integer path vs simulated model on ``(x, y)``; the verdict follows the config's thresholds:
    PASS when the accuracy difference's interval lies above ``-integer_tolerance`` and the share of
    examples labelled alike is at least ``integer_min_agreement`` (exact binomial interval), FAIL when
    either lies wholly on the wrong side.

    The integer path is :func:`integer_logits` (integer arithmetic emulated in PyTorch) unless ``stack``
    gives the logits of ``x`` from a real integer inference stack, its facts and its name
    (``qd.onnx.run.integer_stack``: onnxruntime's QLinearConv/QGemm graph of the run)."""
    layers = quantized_layers(model, codes)
    if not layers:
        raise ValueError(f"{run}: no conv or linear layer is stored as a uniform code")
    bits = code_bits(layers[0][2])
    sim = _logits(model, x, 256)
    integer, facts, ran_on = stack or (*integer_logits(model, codes, x, cfg["integer_activation_bits"]), EMULATED)
    c_sim = (sim.argmax(1) == y).double().numpy()
    c_int = (integer.argmax(1) == y).double().numpy()
    same = int((sim.argmax(1) == integer.argmax(1)).sum())
    conf = cfg["confidence"]
    iv = paired_difference(c_int, c_sim, cfg["bootstrap_samples"], seed, conf)
    lo, hi = clopper_pearson(same, len(y), conf)
    rel = float((integer - sim).abs().max() / sim.abs().max().clamp_min(1e-12))
    tol, agree = cfg["integer_tolerance"], cfg["integer_min_agreement"]
    codes_error = codes_match_weights(model, codes)
    if iv.high < -tol or hi < agree or not facts["fits_int32"]:
        v = FAIL
    elif iv.low > -tol and lo >= agree:
        v = PASS
    else:
        v = INCONCLUSIVE
    split = {"channels": 0, "split_channels": 0, "buckets": 0, "straddling_buckets": 0}
    for _, _, c in layers:
        lay = channel_layout(c)
        for k in split:
            split[k] += lay[k]
    check = IntegerCheck(run, bits, bucket, len(y), 100 * c_sim.mean(), 100 * c_int.mean(), same / len(y), lo, hi,
                         rel, codes_error, facts, split, iv, v, stack=ran_on)
    for b in sorted({bits, 8}):
        twin, changed = per_channel_model(model, codes, b)
        if changed == 0:
            check.per_channel[b] = (100 * c_sim.mean(), None, 0)
            continue
        c_pc = (_logits(twin, x, 256).argmax(1) == y).double().numpy()
        check.per_channel[b] = (100 * c_pc.mean(), paired_difference(c_pc, c_sim, cfg["bootstrap_samples"], seed, conf),
                                changed)
    return check


def check_line(k: IntegerCheck) -> str:
    lay, f = k.layout, k.facts
    pc = []
    for b, (acc, iv, changed) in k.per_channel.items():
        if changed == 0:
            pc.append(f"{b}-bit per channel: nothing to change")
        else:
            pc.append(f"{b}-bit per channel ({changed} layers re-quantized): {acc:.2f}% ({iv.describe()})")
    accumulator = ("" if f["largest_accumulator"] is None else f"largest accumulator {f['largest_accumulator']:.3g} "
                   f"(int32: {'fits' if f['fits_int32'] else 'OVERFLOWS'}); ")
    return (f"{k.run}: integer path on {k.stack}: {k.integer_accuracy:.2f}% vs simulated {k.simulated_accuracy:.2f}% "
            f"({k.interval.describe()}); same label on {k.agreement:.1%} of {k.n} examples "
            f"[{k.agreement_low:.1%}, {k.agreement_high:.1%}]; largest logit error {k.max_logit_error:.2%} of the "
            f"largest logit; {f['integer_layers']} integer layers, {f['float_layers']} in fp32; {accumulator}codes vs weights "
            f"{k.codes_error:.2g}; {lay['split_channels']} of {lay['channels']} output channels span more than one "
            f"bucket, {lay['straddling_buckets']} of {lay['buckets']} buckets straddle channels; " + "; ".join(pc)
            + f": **{k.verdict}**")


def verdict_of(checks: list[IntegerCheck]) -> str:
    return combine([k.verdict for k in checks], "all")


def check_rows(checks: list[IntegerCheck]) -> list[dict]:
    """One table row per checked model (``tables/<task>_integer.csv``)."""
    rows = []
    for k in checks:
        row = {"run": k.run, "stack": k.stack, "bits": k.bits, "bucket": k.bucket, "examples": k.n,
               "simulated_accuracy": k.simulated_accuracy, "integer_accuracy": k.integer_accuracy,
               "difference": k.interval.estimate, "low": k.interval.low, "high": k.interval.high,
               "agreement": k.agreement, "max_logit_error": k.max_logit_error,
               "largest_accumulator": k.facts["largest_accumulator"], "fits_int32": k.facts["fits_int32"],
               "channels": k.layout["channels"], "split_channels": k.layout["split_channels"],
               "buckets": k.layout["buckets"], "straddling_buckets": k.layout["straddling_buckets"],
               "verdict": k.verdict}
        for b, (acc, iv, changed) in k.per_channel.items():
            row[f"per_channel_{b}bit_accuracy"] = acc
            row[f"per_channel_{b}bit_difference"] = iv.estimate if iv else 0.0
        rows.append(row)
    return rows


def load_run(path: Path):
    """``(model, codes, header)`` of a run's artefact (``qd.run.model_from_artefact``)."""
    from qd.run import model_from_artefact

    return model_from_artefact(path)
