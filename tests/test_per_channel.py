"""Per-channel quantization-aware training (qd/quantizers/per_channel.py) and its ``affine`` codes.

Hand-worked cases for the scales, zero points and levels; ``decode`` against the PyTorch op bit for
bit (ties included); the artefact round trip; the analytic size and the bytes on disk by hand.
"""
from __future__ import annotations

import pytest
import torch

from qd.artefact import artefact_size, export_artefact, load_artefact
from qd.quant import decode
from qd.quantizers.layouts import AFFINE, level_spacing
from qd.quantizers.per_channel import SCALE_EPS, PerChannelQuantizer, minmax_qparams
from qd.size import level_counts, model_sizes

F32 = torch.float32


def test_qparams_and_levels_hand_case():
    # 2 bits: levels 0..3.
    # row 0 [0, 1, 2, 3]: lo = 0, hi = 3 -> scale 1, zero point 0 - round(0) = 0, levels 0 1 2 3
    # row 1 [-2, -1, 0, 1]: lo = -2, hi = 1 -> scale 1, zero point 0 - round(-2) = 2, levels 0 1 2 3
    # row 2 all 0.5: the range is widened to hold 0: lo = 0, hi = 0.5 -> scale 0.5/3, zero point 0, level 3
    # row 3 all 0: scale falls to eps (fp32), zero point 0, level 0
    w = torch.tensor([[0.0, 1, 2, 3], [-2, -1, 0, 1], [0.5] * 4, [0.0] * 4])
    q = PerChannelQuantizer(2)
    scale, zero_point = q.qparams(w)
    third = torch.tensor(0.5, dtype=F32) / 3
    assert scale.tolist() == [1.0, 1.0, third.item(), SCALE_EPS]
    assert zero_point.tolist() == [0, 2, 0, 0] and zero_point.dtype == torch.int32
    codes = q.encode(w)
    assert codes.layout == AFFINE and codes.quant_min == 0 and codes.quant_max == 3
    # output channels are stated as flat buckets of the fan-in (the same groups)
    assert codes.axis is None and codes.bucket_size == 4 and codes.n_buckets == 4
    assert codes.indices.view(4, 4).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [3] * 4, [0] * 4]
    want = torch.stack([w[0], w[1], (3 * third).expand(4), w[3]])
    assert torch.equal(q(w), want)
    assert torch.equal(decode(codes), want)
    # lo and hi: the values of each channel's lowest and highest level
    assert codes.lo.tolist() == [0.0, -2.0, 0.0, 0.0]
    assert codes.hi.tolist() == [3.0, 1.0, (3 * third).item(), 3 * SCALE_EPS]


def test_ties_round_half_to_even_before_the_zero_point():
    # 3 bits (levels 0..7), row [-3.5, 0.5, 1.5, 3.5]: lo = -3.5, hi = 3.5 -> scale 7 / 7 = 1;
    # zero point 0 - round(-3.5) = 4 (half to even: -4). Levels round(x) + 4 with ties to even:
    # -3.5 -> -4 + 4 = 0, 0.5 -> 0 + 4 = 4, 1.5 -> 2 + 4 = 6, 3.5 -> 4 + 4 = 8, clamped to 7.
    # Values (level - 4) * 1: [-4, 0, 2, 3]: the max is clipped by the rounded zero point.
    w = torch.tensor([[-3.5, 0.5, 1.5, 3.5]])
    q = PerChannelQuantizer(3)
    assert q.qparams(w)[1].tolist() == [4]
    assert q(w).tolist() == [[-4.0, 0.0, 2.0, 3.0]]
    assert q.encode(w).indices.tolist() == [0, 4, 6, 7]
    # the gradient is straight through inside the range, zero for the clipped element
    wr = w.clone().requires_grad_(True)
    q(wr).sum().backward()
    assert wr.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]


def test_qparams_match_pytorch_per_channel_observer():
    observers = pytest.importorskip("torch.ao.quantization.observer")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 3, 3, 3, generator=g) * torch.rand(16, 1, 1, 1, generator=g)
    w[3] = w[3].abs() + 0.1  # a channel without negative values: the range is widened to 0
    for bits in (2, 4, 8):
        obs = observers.PerChannelMinMaxObserver(ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine,
                                                 quant_min=0, quant_max=2**bits - 1)
        obs(w)
        want_scale, want_zp = obs.calculate_qparams()
        scale, zero_point = minmax_qparams(w, 0, 0, 2**bits - 1)
        assert torch.equal(scale, want_scale.float())
        assert torch.equal(zero_point, want_zp.to(torch.int32))


def _with_ties(w: torch.Tensor, q: PerChannelQuantizer) -> torch.Tensor:
    """``w`` with every third element of each channel moved onto a half-way point ``(k + 1/2) * scale``.

    ``k`` runs over ``-zero_point .. quant_max - 1 - zero_point``, whose half-way points lie inside the
    channel's range; a channel's min and max elements stay, so the scales do not change.
    """
    scale, zp = q.qparams(w)
    rows = w.movedim(q.axis, 0).reshape(w.shape[q.axis], -1).clone()
    m = rows.shape[1]
    keep = torch.zeros_like(rows, dtype=torch.bool)
    keep.scatter_(1, rows.argmin(dim=1, keepdim=True), True)
    keep.scatter_(1, rows.argmax(dim=1, keepdim=True), True)
    span = q.quant_max  # number of half-way points inside the range
    k = torch.arange(m) % span - zp[:, None].long()
    ties = ((k + 0.5) * scale[:, None]).to(w.dtype)
    chosen = (torch.arange(m) % 3 == 0) & ~keep
    rows = torch.where(chosen, ties, rows)
    moved = rows.reshape((w.shape[q.axis],) + tuple(s for i, s in enumerate(w.shape) if i != q.axis))
    out = moved.movedim(0, q.axis)
    assert torch.equal(q.qparams(out)[0], scale)
    return out


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("shape,axis", [((8, 3, 3, 3), 0), ((10, 20), 0), ((10, 20), 1), ((7,), 0), ((4, 6, 5), 2)])
def test_decode_is_the_fake_quantize_output_bit_for_bit(bits, shape, axis):
    g = torch.Generator().manual_seed(bits)
    q = PerChannelQuantizer(bits, axis)
    w = _with_ties(torch.randn(*shape, generator=g) * 0.3 - 0.05, q)
    out = q(w)
    codes = q.encode(w)
    assert torch.equal(decode(codes), out)
    assert codes.n_groups == shape[axis] and codes.n_levels == 2**bits and codes.uniform
    assert (codes.axis, codes.bucket_size) == ((None, w.numel() // shape[0]) if axis == 0 else (axis, None))
    assert int(codes.indices.max()) <= 2**bits - 1
    # the op agrees with the formula written out per channel: x * (1 / scale) in fp32, rounded half to
    # even, plus the zero point, clamped; (level - zero point) * scale is exact in float64
    scale, zp = q.qparams(w)
    moved = w.movedim(axis, 0)
    if w.numel() // shape[axis] >= 3:  # ties are there
        assert any(((moved[c] * (1.0 / scale[c])) % 1 == 0.5).any() for c in range(shape[axis]))
    for c in range(shape[axis]):
        level = (torch.round(moved[c] * (1.0 / scale[c])).double() + zp[c]).clamp(0, 2**bits - 1)
        assert torch.equal(out.movedim(axis, 0)[c].double(), ((level - zp[c]) * scale[c].double()).float().double())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_decode_bit_exact_in_other_dtypes(dtype):
    g = torch.Generator().manual_seed(5)
    q = PerChannelQuantizer(4)
    w = torch.randn(32, 50, generator=g).to(dtype)
    out = q(w)
    assert out.dtype == dtype
    assert torch.equal(decode(q.encode(w)), out)


def test_level_spacing_states_the_affine_grid():
    w = torch.randn(6, 11, generator=torch.Generator().manual_seed(1))
    q = PerChannelQuantizer(3)
    codes = q.encode(w)
    offset, step = level_spacing(codes)
    scale, zp = q.qparams(w)
    assert torch.equal(step, scale)
    assert torch.equal(offset, (0 - zp).float() * scale)
    rebuilt = offset[:, None] + step[:, None] * codes.indices.view(6, 11)
    torch.testing.assert_close(rebuilt, q(w), rtol=0, atol=1e-6)


def _hand_model():
    """The 2x4 weight of the hand case (2-bit levels 0 1 2 3 in both channels) and an fp32 bias."""
    w = torch.tensor([[0.0, 1, 2, 3], [-2, -1, 0, 1]])
    return {"w": w, "b": torch.tensor([0.5, -0.25])}


def test_size_matches_a_hand_computation(tmp_path):
    params = _hand_model()
    q = PerChannelQuantizer(2)
    codes = {"w": q.encode(params["w"])}
    # level counts [2, 2, 2, 2]: Huffman gives every level 2 bits, b_eff = 2
    assert level_counts(codes).tolist() == [2, 2, 2, 2]
    sizes = model_sizes(params, codes)
    assert sizes["huffman_bits_per_weight"] == 2.0
    assert sizes["n_buckets"] == 2 and sizes["scale_bytes"] == 16  # scale + zero point per channel, 4 bytes each
    # 4 * 2 (bias) + 2 * 8 / 8 (indices) + 2 channels * 2 fp32 = 8 + 2 + 16
    assert sizes["size_analytic"] == 26.0
    assert sizes["size_fp32"] == 40
    # bytes on disk, by part: prefix 8 + 2 + 8 + 32; header u32 + "{}"; code table u32 + 4 lengths + u32;
    # metadata: u32 entries, w: kind, u16 + "w", dtype, ndim, 2 u64 dims, then u64 n, u8 axis, u32 bucket,
    # i32 quant_min, u32 levels (22 + 21); b: 1 + 3 + 1 + 1 + 8;
    # scales: u8 dtype + u64 groups + 2 fp32 scales + u8 zero-point dtype + 2 int32 zero points;
    # index stream: u64 bit count + 16 bits; fp tensors: 2 fp32
    sections = artefact_size(params, codes)
    assert sections == {"prefix": 50, "header": 6, "code_table": 12, "tensor_metadata": 4 + 43 + 14,
                        "bucket_scales": 9 + 8 + 1 + 8, "index_streams": 8 + 2, "fp_tensors": 8, "total": 173}
    assert export_artefact(tmp_path / "m.qda", params, codes) == 173
    assert (tmp_path / "m.qda").stat().st_size == 173


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_codes_round_trip_through_the_artefact_bit_for_bit(tmp_path, bits):
    g = torch.Generator().manual_seed(bits)
    q = PerChannelQuantizer(bits)
    weights = {"conv.weight": torch.randn(16, 3, 3, 3, generator=g) * 0.2,
               "fc.weight": torch.randn(10, 64, generator=g),
               "emb.weight": torch.randn(5, 300, generator=g)}
    codes = {k: q.encode(v) for k, v in weights.items()}
    codes["fc_t.weight"] = PerChannelQuantizer(bits, axis=1).encode(weights["fc.weight"])
    state = {**weights, "fc_t.weight": weights["fc.weight"], "fc.bias": torch.randn(10, generator=g)}
    path = tmp_path / "m.qda"
    assert export_artefact(path, state, codes, {"model": "t"}) == path.stat().st_size
    assert path.read_bytes()[8:10] == (2).to_bytes(2, "little")  # a version-2 file
    loaded, loaded_codes, header = load_artefact(path)
    assert header == {"model": "t"}
    for name, c in codes.items():
        got = loaded_codes[name]
        assert (got.layout, got.axis, got.quant_min, got.quant_max, got.shape) == (c.layout, c.axis, 0, 2**bits - 1,
                                                                                   c.shape)
        assert torch.equal(got.indices, c.indices) and torch.equal(got.scale, c.scale)
        assert torch.equal(got.zero_point, c.zero_point) and got.zero_point.dtype == torch.int32
        assert torch.equal(got.lo, c.lo) and torch.equal(got.hi, c.hi) and torch.equal(got.grid, c.grid)
        axis = 1 if name == "fc_t.weight" else 0
        source = weights["fc.weight"] if name == "fc_t.weight" else weights[name]
        assert torch.equal(loaded[name], PerChannelQuantizer(bits, axis)(source)), name
    assert torch.equal(loaded["fc.bias"], state["fc.bias"])
