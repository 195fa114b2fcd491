"""Claim 5's integer path: the bucket layout on output channels by hand, exact integer sums, and the
check on a quantized student that PASSes from its own codes, FAILs from deliberately corrupted codes,
and is INCONCLUSIVE on too few examples."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from qd.models.convnet import convnet
from qd.quant import QuantCodes, decode, encode_uniform
from qd.report.build import report_settings
from qd.report.integer import (channel_layout, check_integer_model, check_line, integer_layer, integer_logits,
                               integer_output, Accumulators, per_channel_model, quantized_layers)
from qd.report.claims.speed import weight_depth
from qd.report.stats import FAIL, INCONCLUSIVE, PASS

CFG = {**report_settings(None), "bootstrap_samples": 500}


def _codes(shape, bucket=256, bits=4, seed=0):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return encode_uniform(w, bits, bucket)


def _int8_input(batch, features, seed):
    """A float64 input and its signed 8-bit integers at one scale (the largest magnitude -> 127)."""
    x = torch.randn(batch, features, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scale = float(x.abs().max()) / 127
    return x, scale, torch.clamp(torch.round(x / scale), -127, 127)


def test_channel_layout_by_hand():
    # 3 channels of 100 weights, buckets of 256: bucket 0 = weights 0..255 (channels 0, 1 and part of 2),
    # bucket 1 = weights 256..299 (the rest of channel 2); only channel 2 spans two buckets
    lay = channel_layout(_codes((3, 100)))
    assert (lay["buckets"], lay["straddling_buckets"], lay["split_channels"]) == (2, 1, 1)
    # one bucket per channel: the layout a per-channel kernel takes
    lay = channel_layout(_codes((4, 16, 4, 4)))  # fan-in 256
    assert (lay["buckets"], lay["straddling_buckets"], lay["split_channels"]) == (4, 0, 0)
    # channels of 300 weights: every channel meets two buckets, buckets 1 and 2 straddle channels
    lay = channel_layout(_codes((2, 300)))
    assert (lay["buckets"], lay["straddling_buckets"], lay["split_channels"]) == (3, 1, 2)
    # no bucketing: one scale for the whole tensor
    assert channel_layout(_codes((5, 50), bucket=None))["split_channels"] == 0


def test_integer_sums_rebuild_the_dequantized_product():
    """sum over segments of scale * (integer sum) + offset * (sum of activations) = Q(w) x, for a
    layer whose channels straddle buckets; every partial sum is an exact integer."""
    c = _codes((3, 100), bits=3)
    layer = integer_layer(c)
    assert layer.n_slots == 2
    lin = nn.Linear(100, 3, bias=False)
    x, scale, qx = _int8_input(7, 100, 1)
    acc = Accumulators()
    y = integer_output(lin, layer, x, scale, 8, acc, None)
    # the dequantized weights in float64: lo + (hi - lo) k / (2^b - 1) of each weight's bucket
    bucket = torch.arange(300) // 256
    w64 = (c.lo.double()[bucket] + (c.hi - c.lo).double()[bucket] * c.indices.double() / 7).view(3, 100)
    assert torch.allclose(y.double(), (qx * scale) @ w64.T, rtol=1e-12, atol=1e-12)
    # and the weights the model holds (decode, fp32) to fp32 precision
    assert torch.allclose(y.double(), (qx * scale) @ decode(c).double().T, rtol=1e-5, atol=1e-5)
    assert acc.largest == float(max((qx @ torch.where(layer.slot == s, layer.q, 0).T).abs().max() for s in (0, 1)))
    assert acc.largest == int(acc.largest)


def test_signed_odd_grid_runs_with_its_own_step():
    """A symmetric 2-bit grid of 3 levels (-1, 0, 1 times a step, as absmax scaling gives) has the step
    (hi - lo) / 2, not / 3: the integer sums must rebuild the decoded weights' product."""
    from qd.quantizers.layouts import integer_codes

    w = torch.randn(4, 80, generator=torch.Generator().manual_seed(2))
    flat = w.reshape(-1)
    steps = flat.view(5, 64).abs().amax(dim=1)
    levels = torch.round(flat.view(5, 64) / steps[:, None]).clamp(-1, 1).long()
    c = integer_codes(levels.reshape(-1), steps, None, -1, 1, (4, 80), torch.float32, bucket_size=64)
    assert c.n_levels == 3
    layer = integer_layer(c)
    assert layer.bits == 2
    lin = nn.Linear(80, 4, bias=False)
    x, scale, qx = _int8_input(6, 80, 4)
    y = integer_output(lin, layer, x, scale, 8, Accumulators(), None)
    # the decoded weights by hand: level (-1, 0 or 1) times its bucket's step
    w_hand = (levels.double() * steps.double()[:, None]).view(4, 80)
    assert torch.allclose(y.double(), (qx * scale) @ w_hand.T, rtol=1e-10, atol=1e-10)
    assert torch.allclose(w_hand.float(), decode(c))


def test_integer_sums_are_exact_in_the_float_type_chosen():
    """float32 holds the segment sums exactly below 2^24: the same sums as float64, bit for bit."""
    from qd.report.integer import exact_dtype

    assert exact_dtype(300, 16, 8) == torch.float32 and exact_dtype(5000, 256, 8) == torch.float64
    conv = nn.Conv2d(12, 6, 5, padding="same")
    c = encode_uniform(conv.weight.detach(), 4, 256)
    layer = integer_layer(c)
    x = torch.randn(9, 12, 8, 8, generator=torch.Generator().manual_seed(3))
    scale = float(x.abs().max()) / 127
    outs = [integer_output(conv, layer, x.double(), scale, 8, Accumulators(), None, dtype)
            for dtype in (torch.float32, torch.float64)]
    assert torch.equal(outs[0], outs[1])


def _quantized_student(bits=4, bucket=256):
    torch.manual_seed(0)
    model = convnet("student3", width=0.5, in_channels=1, num_classes=10, image_size=8).eval()
    codes = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                codes[name] = encode_uniform(p, bits, bucket)
                p.copy_(decode(codes[name]))
    x = torch.randn(400, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the simulated model's answers: it scores 100%
    return model, codes, x, y


def test_integer_path_passes_from_the_models_own_codes():
    model, codes, x, y = _quantized_student()
    k = check_integer_model(model, codes, x, y, {**CFG, "integer_activation_bits": 16}, "student3/qd/b4-d256")
    assert k.verdict == PASS, check_line(k)
    assert k.codes_error == 0 and k.agreement == 1.0 and k.simulated_accuracy == 100.0
    assert k.facts["integer_layers"] == 6 and k.facts["float_layers"] == 0 and k.facts["fits_int32"]
    assert k.max_logit_error < 1e-3
    assert k.layout["split_channels"] > 0  # the paper's buckets do straddle this student's channels
    assert set(k.per_channel) == {4, 8} and k.per_channel[4][2] > 0


def test_integer_path_fails_on_corrupted_codes():
    model, codes, x, y = _quantized_student()
    # mirror every level index (k -> 2^b - 1 - k): still valid 4-bit codes, but not this model's weights
    bad = {n: QuantCodes(15 - c.indices, c.lo, c.hi, c.grid, c.bucket_size, c.shape, c.uniform)
           for n, c in codes.items()}
    k = check_integer_model(model, bad, x, y, {**CFG, "integer_activation_bits": 16}, "corrupted")
    assert k.verdict == FAIL, check_line(k)
    assert k.codes_error > 0.1 and k.agreement < 0.5


def test_integer_path_rejects_indices_outside_the_levels():
    model, codes, x, y = _quantized_student()
    name = next(iter(codes))
    c = codes[name]
    codes[name] = QuantCodes(c.indices + 16, c.lo, c.hi, c.grid, c.bucket_size, c.shape, c.uniform)
    with pytest.raises(ValueError, match="outside 0..15"):
        integer_logits(model, codes, x)


def test_integer_path_is_inconclusive_on_few_examples():
    model, codes, x, y = _quantized_student()
    # 8-bit activations flip one of 40 answers: neither surely within 1 point nor surely outside it
    k = check_integer_model(model, codes, x[:40], y[:40], {**CFG, "integer_activation_bits": 8}, "few")
    assert k.verdict == INCONCLUSIVE, check_line(k)
    assert k.agreement == 39 / 40 and k.agreement_low < CFG["integer_min_agreement"] < k.agreement_high


def test_per_channel_requantization_only_touches_split_channels():
    lin = nn.Linear(256, 4)  # fan-in 256: every channel is one bucket already
    codes = {"weight": encode_uniform(lin.weight.detach(), 4, 256)}
    with torch.no_grad():
        lin.weight.copy_(decode(codes["weight"]))
    twin, changed = per_channel_model(lin, codes, 4)
    assert changed == 0 and torch.equal(twin.weight, lin.weight)
    lin2 = nn.Linear(100, 3)
    codes2 = {"weight": encode_uniform(lin2.weight.detach(), 4, 256)}
    twin2, changed2 = per_channel_model(lin2, codes2, 4)
    assert changed2 == 1
    # after re-quantization each channel holds at most 16 distinct values on its own grid
    assert all(len(torch.unique(row)) <= 16 for row in twin2.weight)
    assert quantized_layers(twin2, codes2)[0][0] == ""


def test_weight_depth_counts_layers_with_weights():
    assert weight_depth(convnet("teacher")) == 8 + 2 + 1
    assert weight_depth(convnet("student1")) == 4 + 1 + 1
    assert weight_depth(nn.LSTM(4, 4, num_layers=2)) == 2
    assert weight_depth(copy.deepcopy(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))) == 1
