"""Huffman code lengths and the paper's size formula (qd/size.py; paper notes 1.9, code notes 2.7)."""
from __future__ import annotations

import math
import random

import pytest
import torch

from qd.quant import encode_nonuniform, encode_uniform
from qd.size import (
    entropy_bits,
    huffman_code_lengths,
    huffman_mean_bits,
    level_counts,
    model_sizes,
    paper_size_bytes,
)

CLRS = {"a": 45, "b": 13, "c": 12, "d": 16, "e": 9, "f": 5}


# ---------------------------------------------------------------- Huffman on textbook cases


def test_clrs_example():
    # Cormen et al., Introduction to Algorithms, fig. 16.5: a=0, b=101, c=100, d=111, e=1101, f=1100
    lengths = huffman_code_lengths(CLRS)
    assert lengths == {"a": 1, "b": 3, "c": 3, "d": 3, "e": 4, "f": 4}
    # mean = (45*1 + (13+12+16)*3 + (9+5)*4) / 100 = 224 / 100
    assert huffman_mean_bits(CLRS) == pytest.approx(2.24, abs=1e-12)


def test_sequence_and_tensor_input_return_lists():
    counts = [45, 13, 12, 16, 9, 5]
    assert huffman_code_lengths(counts) == [1, 3, 3, 3, 4, 4]
    assert huffman_code_lengths(torch.tensor(counts)) == [1, 3, 3, 3, 4, 4]
    assert huffman_mean_bits(torch.tensor(counts)) == pytest.approx(2.24, abs=1e-12)


def test_single_symbol_costs_zero_bits():
    assert huffman_code_lengths({"x": 7}) == {"x": 0}
    assert huffman_mean_bits({"x": 7}) == 0.0
    assert huffman_code_lengths([0, 0, 5, 0]) == [0, 0, 0, 0]
    assert huffman_mean_bits([0, 0, 5, 0]) == 0.0
    assert huffman_mean_bits([0, 0]) == 0.0  # nothing at all


def test_zero_count_symbols_get_no_code():
    assert huffman_code_lengths({"a": 3, "b": 0, "c": 1}) == {"a": 1, "b": 0, "c": 1}
    assert huffman_code_lengths([0, 8, 4, 0, 2, 2]) == [0, 1, 2, 0, 3, 3]


def test_two_symbols_one_bit_each():
    assert huffman_code_lengths([1000, 1]) == [1, 1]
    assert huffman_mean_bits([1000, 1]) == 1.0


def test_dyadic_distribution_meets_entropy():
    # p = (1/2, 1/4, 1/8, 1/8): lengths (1, 2, 3, 3), mean = entropy = 1.75 exactly
    counts = [8, 4, 2, 2]
    assert huffman_code_lengths(counts) == [1, 2, 3, 3]
    assert huffman_mean_bits(counts) == 1.75
    assert entropy_bits(counts) == 1.75


def test_uniform_power_of_two_alphabet():
    # 2^k equally frequent symbols: every code has k bits
    for k in (1, 2, 3, 4):
        assert huffman_code_lengths([5] * 2**k) == [k] * 2**k
        assert entropy_bits([5] * 2**k) == pytest.approx(k, abs=1e-12)


def _optimal_cost(counts):
    """Huffman cost = sum of the weights of all internal nodes (independent of tie-breaking)."""
    import heapq

    h = [c for c in counts if c > 0]
    heapq.heapify(h)
    cost = 0
    while len(h) > 1:
        s = heapq.heappop(h) + heapq.heappop(h)
        cost += s
        heapq.heappush(h, s)
    return cost


def test_random_distributions_entropy_bound_kraft_and_optimality():
    rng = random.Random(2018)
    for _ in range(50):
        n = rng.randint(2, 20)
        counts = [rng.randint(0, 1000) for _ in range(n)]
        # force two distinct used symbols (zeros elsewhere are allowed and get no code)
        i, j = rng.sample(range(n), 2)
        counts[i], counts[j] = rng.randint(1, 1000), rng.randint(1, 1000)
        lengths = huffman_code_lengths(counts)
        used = [i for i, c in enumerate(counts) if c > 0]
        assert len(used) >= 2
        assert all(lengths[i] == 0 for i, c in enumerate(counts) if c == 0)
        assert all(lengths[i] >= 1 for i in used)
        # Kraft equality for a complete prefix code (dyadic sums are exact in float64)
        assert sum(2.0 ** -lengths[i] for i in used) == 1.0
        mean = huffman_mean_bits(counts)
        h = entropy_bits(counts)
        assert h - 1e-12 <= mean < h + 1
        # the mean is the optimal prefix-code cost / total
        assert mean == pytest.approx(_optimal_cost(counts) / sum(counts), abs=1e-12)


def test_entropy_hand_case():
    # p = (1/2, 1/2, 0) -> 1 bit; p = (3/4, 1/4) -> 0.811278...
    assert entropy_bits([3, 3, 0]) == pytest.approx(1.0, abs=1e-15)
    assert entropy_bits([3, 1]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)), abs=1e-15)
    assert entropy_bits([0, 0]) == 0.0


def test_bad_counts_type():
    with pytest.raises(TypeError):
        huffman_code_lengths(5)


# ---------------------------------------------------------------- size formula


def test_paper_size_bytes_formula():
    # 4*10 + 1.75*100/8 + 8*2 = 40 + 21.875 + 16
    assert paper_size_bytes(100, 10, 1.75, 2) == 77.875
    # all fp32: 4 bytes per parameter
    assert paper_size_bytes(0, 1000, 0.0, 0) == 4000


def _hand_weight() -> torch.Tensor:
    """A 10x10 weight whose 2-bit, bucket-64 level counts are known by construction.

    Bucket 0 (elements 0..63): values -0.75, -0.25, 0.25, 0.75 (lo=-0.75, range 1.5, levels 0..3)
    with counts 30, 15, 10, 9. Bucket 1 (elements 64..99, 36 of them): values 1, 2, 3, 4 (lo=1, range 3)
    with counts 20, 10, 3, 3. Pooled level counts: [50, 25, 13, 12].
    """
    b0 = torch.tensor([-0.75] * 30 + [-0.25] * 15 + [0.25] * 10 + [0.75] * 9)
    b1 = torch.tensor([1.0] * 20 + [2.0] * 10 + [3.0] * 3 + [4.0] * 3)
    g = torch.Generator().manual_seed(0)
    b0 = b0[torch.randperm(64, generator=g)]
    b1 = b1[torch.randperm(36, generator=g)]
    return torch.cat([b0, b1]).view(10, 10)


def test_model_sizes_hand_model():
    w = _hand_weight()
    params = {"layer.weight": w, "layer.bias": torch.randn(10)}
    codes = {"layer.weight": encode_uniform(w, 2, 64)}
    assert codes["layer.weight"].n_buckets == 2  # ceil(100 / 64)
    assert level_counts(codes).tolist() == [50, 25, 13, 12]
    sizes = model_sizes(params, codes)
    # Huffman on [50, 25, 13, 12]: merge 12+13=25, 25+25=50, 50+50 -> lengths 1, 2, 3, 3
    # b_eff = (50*1 + 25*2 + 13*3 + 12*3) / 100 = 175 / 100
    assert sizes["huffman_bits_per_weight"] == pytest.approx(1.75, abs=1e-12)
    p = [0.5, 0.25, 0.13, 0.12]
    assert sizes["entropy_bits_per_weight"] == pytest.approx(-sum(q * math.log2(q) for q in p), abs=1e-12)
    assert sizes["params"] == 110
    assert sizes["quantized_params"] == 100
    assert sizes["fp_params"] == 10
    assert sizes["n_buckets"] == 2
    assert sizes["size_fp32"] == 440
    # 4*10 (bias) + 1.75*100/8 (codes) + 8*2 (min and range of 2 buckets) = 77.875 bytes
    assert sizes["size_analytic"] == pytest.approx(77.875, abs=1e-9)


def test_model_sizes_no_bucketing_counts_one_scale_pair_per_tensor():
    w = _hand_weight()
    params = {"w": w, "b": torch.zeros(10)}
    codes = {"w": encode_uniform(w, 2, None)}
    # one global scale: lo = -0.75, hi = 4, range 4.75, 3 steps of 1.5833:
    # -0.75,-0.25,0.25,0.75 -> u*3 = 0, 0.316, 0.632, 0.947 -> levels 0, 0, 1, 1   (30+15 | 10+9)
    # 1,2,3,4 -> u*3 = 1.105, 1.737, 2.368, 3 -> levels 1, 2, 2, 3                (20 | 10+3 | 3)
    # counts [45, 39, 13, 3] -> Huffman: 3+13=16, 16+39=55, 45+55=100 -> lengths 1, 2, 3, 3
    assert level_counts(codes).tolist() == [45, 39, 13, 3]
    sizes = model_sizes(params, codes)
    b_eff = (45 * 1 + 39 * 2 + 13 * 3 + 3 * 3) / 100
    assert sizes["n_buckets"] == 1
    assert sizes["huffman_bits_per_weight"] == pytest.approx(b_eff, abs=1e-12)
    assert sizes["size_analytic"] == pytest.approx(4 * 10 + b_eff * 100 / 8 + 8, abs=1e-9)


def test_model_sizes_pools_one_code_over_tensors():
    # two quantized tensors: their level counts add up before the single Huffman code is built.
    # t1: 1 bit, one bucket [0, 0, 1, 0] -> indices [0, 0, 1, 0]
    # t2: 1 bit, buckets of 2: [7, 5] -> [1, 0]; [7, 7] is constant -> level 0 -> [0, 0]
    # pooled counts [3+3, 1+1] = [6, 2]; two used symbols -> 1 bit each
    t1 = torch.tensor([0.0, 0.0, 1.0, 0.0])
    t2 = torch.tensor([7.0, 5.0, 7.0, 7.0])
    codes = {"t1": encode_uniform(t1, 1, None), "t2": encode_uniform(t2, 1, 2)}
    assert codes["t2"].indices.tolist() == [1, 0, 0, 0]
    assert level_counts(codes).tolist() == [6, 2]
    sizes = model_sizes({"t1": t1, "t2": t2}, codes)
    assert sizes["huffman_bits_per_weight"] == 1.0
    assert sizes["n_buckets"] == 1 + 2
    assert sizes["size_analytic"] == pytest.approx(0 + 1.0 * 8 / 8 + 8 * 3)


def test_model_sizes_nonuniform_codes_and_mixed_level_counts():
    # a 3-point non-uniform tensor and a 1-bit uniform tensor: counts are padded to the longest grid
    a = torch.tensor([0.0, 0.5, 1.0, 1.0, 0.9])  # points [0, .5, 1] -> indices [0, 1, 2, 2, 2]
    b = torch.tensor([2.0, 3.0, 3.0])  # 1 bit -> indices [0, 1, 1]
    codes = {"a": encode_nonuniform(a, torch.tensor([0.0, 0.5, 1.0]), None), "b": encode_uniform(b, 1, None)}
    assert codes["a"].indices.tolist() == [0, 1, 2, 2, 2]
    assert level_counts(codes).tolist() == [2, 3, 3]
    # Huffman [2, 3, 3]: 2+3 = 5, 5+3 = 8 -> lengths 2, 2, 1 (or 2, 1, 2): cost (2+3)*2 + 3 = 13 over 8
    sizes = model_sizes({"a": a, "b": b, "c": torch.zeros(7)}, codes)
    assert sizes["huffman_bits_per_weight"] == pytest.approx(13 / 8)
    assert sizes["fp_params"] == 7
    assert sizes["size_analytic"] == pytest.approx(4 * 7 + 13 / 8 * 8 / 8 + 8 * 2)


def test_model_sizes_nothing_quantized():
    params = {"w": torch.zeros(3, 4), "b": torch.zeros(3)}
    sizes = model_sizes(params, {})
    assert sizes["quantized_params"] == 0 and sizes["n_buckets"] == 0
    assert sizes["size_analytic"] == sizes["size_fp32"] == 60


# ---------------------------------------------------------------- other layouts (qd/quantizers/layouts.py)


def test_scale_bytes_per_layout_hand_case():
    from qd.quantizers.layouts import encode_codebook, integer_codes
    from qd.size import scale_bytes

    codes = {
        # minmax: ceil(10 / 4) = 3 buckets, min and max each: 3 * 2 * 4 = 24 bytes
        "a": encode_uniform(torch.arange(10.0), 1, 4),
        # affine per channel: 3 channels, scale and zero point each: 3 * 2 * 4 = 24 bytes
        "b": integer_codes(torch.zeros(3, 2, dtype=torch.long), torch.ones(3), torch.zeros(3, dtype=torch.int32), 0, 3,
                           (3, 2), torch.float32, axis=0),
        # step per tensor: one fp32
        "c": integer_codes(torch.zeros(5, dtype=torch.long), torch.ones(1), None, -2, 1, (5,), torch.float32),
        # codebook: nothing per group (its table is per tensor, not counted, as DQ's points)
        "d": encode_codebook(torch.zeros(4), torch.tensor([-1.0, 1.0])),
    }
    assert [c.n_groups for c in codes.values()] == [3, 3, 1, 0]
    assert scale_bytes(codes) == 24 + 24 + 4 + 0
    params = {k: torch.zeros(math.prod(c.shape)) for k, c in codes.items()} | {"bias": torch.zeros(3)}
    sizes = model_sizes(params, codes)
    assert sizes["n_buckets"] == 7 and sizes["scale_bytes"] == 52
    assert sizes["quantized_params"] == 10 + 6 + 5 + 4 and sizes["fp_params"] == 3
    assert sizes["size_analytic"] == pytest.approx(4 * 3 + sizes["huffman_bits_per_weight"] * 25 / 8 + 52, abs=1e-12)


def test_layouts_with_different_level_counts_pool_into_one_code():
    # a 1-bit minmax tensor [2, 3, 3] -> indices [0, 1, 1]; a 2-bit affine tensor with levels [0, 3, 3, 2]:
    # index k is the k-th level from the bottom in both, counts [1 + 1, 2 + 0, 0 + 1, 0 + 2] = [2, 2, 1, 2]
    # Huffman cost on [1, 2, 2, 2]: 1 + 2 = 3, 2 + 2 = 4, 3 + 4 = 7 -> 14 bits over 7 symbols = 2 bits
    from qd.quantizers.layouts import integer_codes

    codes = {"m": encode_uniform(torch.tensor([2.0, 3.0, 3.0]), 1, None),
             "a": integer_codes(torch.tensor([0, 3, 3, 2]), torch.ones(1), torch.zeros(1, dtype=torch.int32), 0, 3,
                                (4,), torch.float32)}
    assert level_counts(codes).tolist() == [2, 2, 1, 2]
    sizes = model_sizes({"m": torch.zeros(3), "a": torch.zeros(4)}, codes)
    assert sizes["huffman_bits_per_weight"] == 2.0
    # 2 * 7 / 8 (indices) + 8 (min, max of one bucket) + 8 (scale, zero point of one group)
    assert sizes["size_analytic"] == 1.75 + 16
