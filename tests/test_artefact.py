"""The compressed model file (qd/artefact.py; paper notes 1.9, design 'three sizes').

Round trips are checked bit for bit against ``qd.quant.decode``; the size against the paper's formula
(``qd.size.model_sizes``); the canonical code against hand-built cases (RFC 1951's example).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import qd.artefact
from qd.artefact import (
    FORMAT_VERSION,
    MAGIC,
    ArtefactError,
    artefact_size,
    canonical_code,
    export_artefact,
    huffman_decode,
    huffman_encode,
    load_artefact,
)
from qd.models.convnet import convnet
from qd.quant import decode, encode_nonuniform, encode_uniform, quantile_points
from qd.size import huffman_code_lengths, model_sizes

# ------------------------------------------------------------------------------ canonical code


def test_canonical_code_matches_rfc1951_example():
    # RFC 1951 section 3.2.2: lengths (3,3,3,3,3,2,4,4) for A..H give
    # F=00, A=010, B=011, C=100, D=101, E=110, G=1110, H=1111
    code = canonical_code([3, 3, 3, 3, 3, 2, 4, 4])
    assert code.codes.tolist() == [0b010, 0b011, 0b100, 0b101, 0b110, 0b00, 0b1110, 0b1111]


def test_encode_packs_codewords_msb_first():
    # lengths (1, 2, 2): codes 0, 10, 11. Symbols 2,0,1,1 -> 11 0 10 10 -> 1101 010(0 padding)
    code = canonical_code([1, 2, 2])
    stream, n_bits = huffman_encode(np.array([2, 0, 1, 1]), code)
    assert n_bits == 7
    assert stream == bytes([0b11010100])
    assert huffman_decode(stream, n_bits, 4, code).tolist() == [2, 0, 1, 1]


def test_incomplete_code_lengths_are_rejected():
    with pytest.raises(ValueError, match="Kraft"):
        canonical_code([1, 2])


@pytest.mark.parametrize("lengths", [
    [1, 2, 3, 4, 5, 6, 6],  # skewed, short: the lookup-table path
    list(range(1, 25)) + [24],  # codewords up to 24 bits: the searchsorted path, slow resynchronisation
])
def test_decode_inverts_encode_for_any_complete_code(lengths):
    code = canonical_code(lengths)
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, len(lengths), size=5001)
    stream, n_bits = huffman_encode(symbols, code)
    assert n_bits == sum(lengths[s] for s in symbols)
    assert np.array_equal(huffman_decode(stream, n_bits, symbols.size, code), symbols)


def test_decode_is_exact_when_segments_resynchronise_late(monkeypatch):
    # one-codeword overlaps and tiny blocks: most segments miss their merge and are decoded again
    monkeypatch.setattr(qd.artefact, "_OVERLAP_CODEWORDS", 1)
    monkeypatch.setattr(qd.artefact, "_DECODE_BLOCK_BITS", 1 << 10)
    rng = np.random.default_rng(1)
    p = rng.random(200) ** 6
    symbols = rng.choice(200, size=30000, p=p / p.sum())
    code = canonical_code(huffman_code_lengths(np.bincount(symbols, minlength=200).tolist()))
    stream, n_bits = huffman_encode(symbols, code)
    assert np.array_equal(huffman_decode(stream, n_bits, symbols.size, code), symbols)


def test_decode_rejects_a_stream_of_the_wrong_length():
    code = canonical_code([1, 2, 2])
    stream, n_bits = huffman_encode(np.array([2, 0, 1, 1]), code)
    with pytest.raises(ValueError):
        huffman_decode(stream, n_bits - 1, 4, code)
    with pytest.raises(ValueError):
        huffman_decode(stream, n_bits, 5, code)


# ------------------------------------------------------------------------------ round trips


def _round_trip(tmp_path, state_dict, codes, header=None):
    path = tmp_path / "model.qda"
    written = export_artefact(path, state_dict, codes, header or {"model": "test"})
    assert written == path.stat().st_size
    assert written == artefact_size(state_dict, codes, header or {"model": "test"})["total"]
    return load_artefact(path)


def _assert_codes_equal(got, want):
    assert torch.equal(got.indices, want.indices.long())
    assert torch.equal(got.lo, want.lo) and torch.equal(got.hi, want.hi)
    assert torch.equal(got.grid, want.grid)
    assert (got.bucket_size, got.shape, got.uniform) == (want.bucket_size, tuple(want.shape), want.uniform)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("bucket", [256, None])
def test_uniform_round_trip_is_bit_exact(tmp_path, bits, bucket):
    g = torch.Generator().manual_seed(bits)
    tensors = {f"w{n}": torch.randn(n, generator=g) for n in (1, 255, 256, 257, 1000)}
    tensors["conv"] = torch.randn(7, 3, 5, 5, generator=g)
    codes = {k: encode_uniform(v, bits, bucket) for k, v in tensors.items()}
    state_dict, loaded, header = _round_trip(tmp_path, tensors, codes)
    assert header == {"model": "test"}
    for k in tensors:
        assert torch.equal(state_dict[k], decode(codes[k])), k
        _assert_codes_equal(loaded[k], codes[k])


@pytest.mark.parametrize("n_points", [2, 3, 16, 21])
@pytest.mark.parametrize("bucket", [256, None])
def test_nonuniform_round_trip_is_bit_exact(tmp_path, n_points, bucket):
    g = torch.Generator().manual_seed(n_points)
    tensors = {f"w{n}": torch.randn(n, generator=g) for n in (1, 255, 257, 1000)}
    codes = {k: encode_nonuniform(v, quantile_points(v, n_points, bucket), bucket) for k, v in tensors.items()}
    state_dict, loaded, _ = _round_trip(tmp_path, tensors, codes)
    for k in tensors:
        assert torch.equal(state_dict[k], decode(codes[k])), k
        _assert_codes_equal(loaded[k], codes[k])


def test_mixed_model_keeps_fp_tensors_buffers_order_and_header(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 5))
    model[1].running_mean.normal_()
    model[1].num_batches_tracked.fill_(12345)
    state = model.state_dict()
    state["half"] = torch.randn(3, 4).half()
    state["bf16"] = torch.randn(5).bfloat16()
    state["empty"] = torch.zeros(0, 3)
    codes = {"0.weight": encode_uniform(state["0.weight"], 3, 64),
             "2.weight": encode_nonuniform(state["2.weight"], torch.tensor([0.0, 0.2, 0.5, 1.0]), None)}
    header = {"model": {"name": "tiny", "width": 1.5}, "bits": 3, "classes": ["a", "b"]}
    loaded, _, got_header = _round_trip(tmp_path, state, codes, header)
    assert list(loaded) == list(state)
    assert got_header == header
    for k, v in state.items():
        want = decode(codes[k]) if k in codes else v
        assert loaded[k].dtype == want.dtype and loaded[k].shape == want.shape
        assert torch.equal(loaded[k], want), k
    model.load_state_dict({k: loaded[k] for k in model.state_dict()})  # loads into the model as is


def test_one_used_level_costs_no_stream_bits(tmp_path):
    # a constant tensor: every index is level 0, Huffman gives it a 0-bit code (the paper's b_eff = 0)
    codes = {"c": encode_uniform(torch.full((1000,), 0.25), 4, 256)}
    sizes = artefact_size({}, codes)
    assert sizes["index_streams"] == 8  # the u64 bit count only
    state_dict, _, _ = _round_trip(tmp_path, {}, codes)
    assert torch.equal(state_dict["c"], decode(codes["c"]))


def test_model_without_quantized_tensors_round_trips(tmp_path):
    state = {"w": torch.randn(4, 4), "b": torch.arange(3)}
    loaded, codes, _ = _round_trip(tmp_path, state, {})
    assert codes == {}
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


# ------------------------------------------------------------------------------ size on disk


def _peaked_student():
    """Student 1 at width 1 (1,000,235 parameters) with normal weights, as trained weights look:
    min-max buckets of a bell-shaped histogram use the middle levels most, so Huffman saves bits."""
    torch.manual_seed(0)
    model = convnet("student1")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_file_is_within_two_percent_of_the_analytic_huffman_size(tmp_path, bits):
    model = _peaked_student()
    params = dict(model.named_parameters())
    # conv and linear layers quantized, BatchNorm gamma/beta kept fp32 (the N_fp term of the formula)
    codes = {n: encode_uniform(p, bits, 256) for n, p in params.items() if "norms" not in n}
    assert sum(c.indices.numel() for c in codes.values()) > 100_000
    state = model.state_dict()
    on_disk = export_artefact(tmp_path / "m.qda", state, codes, {"model": "student1", "bits": bits})
    analytic = model_sizes(params, codes)
    assert analytic["huffman_bits_per_weight"] < bits  # the peaked histogram is really compressed
    # the paper's formula leaves out BatchNorm running statistics; the file must store them
    buffers = sum(v.numel() * v.element_size() for k, v in state.items() if k not in params)
    ratio = (on_disk - buffers) / analytic["size_analytic"]
    assert 1.0 <= ratio <= 1.02, ratio
    # and the index streams alone are the Huffman bits, up to one padding byte per tensor
    streams = artefact_size(state, codes)["index_streams"] - 8 * len(codes)
    huffman_bytes = analytic["huffman_bits_per_weight"] * analytic["quantized_params"] / 8
    assert 0 <= streams - huffman_bytes <= len(codes)


# ------------------------------------------------------------------------------ damaged files


@pytest.fixture
def artefact(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5000, generator=g)
    path = tmp_path / "m.qda"
    export_artefact(path, {"w": w, "b": torch.randn(10, generator=g)}, {"w": encode_uniform(w, 4, 256)})
    return path


def test_flipped_byte_is_a_checksum_error(artefact):
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0x10
    artefact.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="checksum mismatch") as e:
        load_artefact(artefact)
    assert str(artefact) in str(e.value)


@pytest.mark.parametrize("keep", [0, 4, 30, -1])
def test_truncated_file_is_reported(artefact, keep):
    data = artefact.read_bytes()
    artefact.write_bytes(data[:keep])
    with pytest.raises(ArtefactError, match="truncated") as e:
        load_artefact(artefact)
    assert str(artefact) in str(e.value)


def test_truncated_payload_names_the_missing_bytes(artefact):
    data = artefact.read_bytes()
    artefact.write_bytes(data[:-100])
    with pytest.raises(ArtefactError, match=f"truncated: payload has {len(data) - 50 - 100} of"):
        load_artefact(artefact)


def test_wrong_magic_is_reported(artefact):
    data = artefact.read_bytes()
    artefact.write_bytes(b"PK\x03\x04" + data[4:])  # e.g. a torch.save zip file
    with pytest.raises(ArtefactError, match="not a qd model artefact") as e:
        load_artefact(artefact)
    assert str(artefact) in str(e.value)


def test_newer_format_version_is_reported(artefact):
    data = bytearray(artefact.read_bytes())
    data[len(MAGIC):len(MAGIC) + 2] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    artefact.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_artefact(artefact)


def test_artefact_error_is_a_value_error():
    assert issubclass(ArtefactError, ValueError)


def test_header_must_be_json(tmp_path):
    with pytest.raises(TypeError):
        export_artefact(tmp_path / "x.qda", {}, {}, {"bad": object()})
    with pytest.raises(ValueError):
        export_artefact(tmp_path / "x.qda", {}, {}, {"nan": float("nan")})
    assert not (tmp_path / "x.qda").exists()


# ------------------------------------------------------------------------------ layouts and format versions

# A file written by the version-1 writer (before other layouts existed): a 3x5 weight in 2 bits with
# buckets of 4, an fp32 bias of 2 and a 9-element non-uniform tensor (points 0, 0.3, 1, one bucket),
# header {"model": "v1"}. Below it, the exact float32 values the writer's codes decoded to.
V1_FILE = bytes.fromhex(
    "895144410d0a1a0a0100d8000000000000007f0b60f99b6823ad9b330d0bf8151012985f1e814706e81217994bdae561045f"
    "0e0000007b226d6f64656c223a227631227d0400000002020202ffffffff03000000010100770002030000000000000005000000"
    "000000000f00000000000000040000000100020400000000000000d3a28ebf711365bf4852d7bfb09e0c3ee762723fd06bd83fbb"
    "a6a23e229eb23f1e000000000000007cc6cf0c00010062000102000000000000000000003f0000a0bf0101007600010900000000"
    "000000090000000000000000000000020003000000000000009a99993e0000803f010000000000000082fd6abfabd51c40120000"
    "0000000000a6a000")
V1_W = ["-0x1.b58b32p-2", "0x1.e4c5cep-1", "0x1.e4c5cep-1", "-0x1.1d45a6p+0", "0x1.b0d7a0p+0", "-0x1.ca26e2p-1",
        "-0x1.0df812p-5", "0x1.a867e2p-1", "0x1.454d76p-2", "-0x1.aea490p+0", "0x1.454d76p-2", "0x1.454d76p-2",
        "0x1.193d60p-3", "0x1.193d60p-3", "0x1.653c44p+0"]
V1_V = ["0x1.39ab56p+1"] * 2 + ["0x1.7b559ep-4"] + ["0x1.39ab56p+1"] * 3 + ["-0x1.d5fb04p-1"] * 3


def _floats(hexes):
    return torch.tensor([float.fromhex(h) for h in hexes], dtype=torch.float32)


def test_a_version_1_file_still_loads_and_is_rewritten_byte_for_byte(tmp_path):
    path = tmp_path / "v1.qda"
    path.write_bytes(V1_FILE)
    state, codes, header = load_artefact(path)
    assert header == {"model": "v1"} and list(state) == ["w", "b", "v"]
    assert torch.equal(state["w"], _floats(V1_W).view(3, 5))
    assert torch.equal(state["v"], _floats(V1_V))
    assert state["b"].tolist() == [0.5, -1.25]
    assert codes["w"].indices.tolist() == [1, 3, 3, 0, 3, 0, 1, 2, 3, 0, 3, 3, 0, 0, 3]
    assert codes["v"].indices.tolist() == [2, 2, 1, 2, 2, 2, 0, 0, 0]
    assert codes["w"].layout == codes["v"].layout == "minmax" and codes["w"].uniform and not codes["v"].uniform
    # models of the paper's methods are still written as version 1, identically
    again = tmp_path / "again.qda"
    export_artefact(again, {"w": state["w"], "b": state["b"], "v": state["v"]}, codes, header)
    assert again.read_bytes() == V1_FILE


def _assert_same_codes(got, want):
    assert got.layout == want.layout
    assert (got.bucket_size, got.shape, got.uniform, got.axis, got.quant_min) == \
        (want.bucket_size, tuple(want.shape), want.uniform, want.axis, want.quant_min)
    assert torch.equal(got.indices, want.indices.long()) and torch.equal(got.grid, want.grid)
    assert torch.equal(got.lo, want.lo) and torch.equal(got.hi, want.hi)
    for field in ("scale", "zero_point"):
        a, b = getattr(got, field), getattr(want, field)
        assert (a is None and b is None) or (torch.equal(a, b) and a.dtype == b.dtype), field


def test_every_layout_round_trips_in_one_file(tmp_path):
    from qd.quantizers.layouts import encode_codebook
    from qd.quantizers.lsq import LSQQuantizer
    from qd.quantizers.per_channel import PerChannelQuantizer

    g = torch.Generator().manual_seed(3)
    t = {name: torch.randn(*shape, generator=g) for name, shape in
         [("uniform", (40, 7)), ("points", (300,)), ("channels", (6, 4, 3, 3)), ("steps", (9, 50)), ("book", (5, 5)),
          ("bias", (6,))]}
    codes = {"uniform": encode_uniform(t["uniform"], 3, 64),
             "points": encode_nonuniform(t["points"], quantile_points(t["points"], 5, 128), 128),
             "channels": PerChannelQuantizer(4).encode(t["channels"]),
             "steps": LSQQuantizer(t["steps"], 5, "bucket", bucket_size=64).encode(t["steps"]),
             "book": encode_codebook(t["book"], torch.tensor([-1.0, -0.1, 0.2, 1.5]))}
    path = tmp_path / "all.qda"
    export_artefact(path, t, codes)
    assert path.read_bytes()[len(MAGIC):len(MAGIC) + 2] == FORMAT_VERSION.to_bytes(2, "little") == b"\x02\x00"
    state, loaded, _ = load_artefact(path)
    assert list(state) == list(t)
    for name, c in codes.items():
        _assert_same_codes(loaded[name], c)
        assert torch.equal(state[name], decode(c)), name
    assert torch.equal(state["bias"], t["bias"])


def test_a_version_1_file_cannot_hold_other_layouts(tmp_path):
    from qd.quantizers.per_channel import PerChannelQuantizer

    w = torch.randn(4, 5)
    path = tmp_path / "m.qda"
    export_artefact(path, {"w": w}, {"w": PerChannelQuantizer(2).encode(w)})
    data = bytearray(path.read_bytes())
    data[len(MAGIC):len(MAGIC) + 2] = (1).to_bytes(2, "little")  # the version is outside the checksum
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="affine entry .kind 2., which format version 1 does not have"):
        load_artefact(path)
