"""Model size: Huffman coding of level indices and the paper's size formula (notes 1.9).

The paper builds *one* Huffman code over the level indices of all quantized tensors of a model and
reports its mean code length ``b_eff`` bits per weight. The analytic size is then

    size = 4 * N_fp + b_eff * N_q / 8 + 8 * n_buckets          (bytes)

with ``N_fp`` parameters left in fp32, ``N_q`` quantized parameters and two fp32 scalars (min and
range) per bucket. Here ``n_buckets`` is the true count, ``ceil(numel / d)`` per tensor (one per
tensor without bucketing); the official code used the fractional ``N_q / d`` and dropped the term
without bucketing. Huffman tables, non-uniform point tables and BatchNorm running statistics are not
counted, as in the paper.

Codes of other layouts (``qd.quantizers.layouts``) generalise the last term to the fp32 scalars each
layout keeps per group: 2 per bucket (``minmax``: min and max), 2 per group (``affine``: scale and
zero point, e.g. per channel), 1 per group (``step``: the learned step size), none (``codebook``: its
one table per tensor, like the non-uniform points, is not counted). Their level indices pool into the
one Huffman code as they are: symbol ``k`` is the ``k``-th level from the bottom of its tensor, and a
tensor with fewer levels than another uses the first symbols of the same alphabet.

Exercise it with ``pytest tests/test_size.py``.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence

import torch

from qd.quantizers.layouts import QuantCodes, layout_of

FP32_BYTES = 4
BUCKET_OVERHEAD_BYTES = 8  # two fp32 scalars per bucket: min and range


def _as_mapping(counts) -> dict:
    if isinstance(counts, Mapping):
        return dict(counts)
    if isinstance(counts, torch.Tensor):
        counts = counts.tolist()
    if isinstance(counts, Sequence):
        return dict(enumerate(counts))
    raise TypeError(f"counts must be a mapping or a sequence of frequencies, got {type(counts).__name__}")


def huffman_code_lengths(counts):
    """Code length in bits of every symbol of one Huffman code built from ``counts``.

    ``counts`` maps symbol to frequency (a dict, or a sequence indexed by symbol); the result has the
    same form. Symbols of frequency 0 get no code (length 0); a single used symbol costs 0 bits.
    Ties are broken by first appearance, so the code is deterministic.
    """
    freq = _as_mapping(counts)
    lengths = {s: 0 for s in freq}
    # heap entries: (weight, tie-break order, symbols under this node)
    heap = [(f, i, [s]) for i, (s, f) in enumerate(freq.items()) if f > 0]
    heapq.heapify(heap)
    order = len(heap)
    while len(heap) > 1:
        f1, _, s1 = heapq.heappop(heap)
        f2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, order, s1 + s2))
        order += 1
    if isinstance(counts, Mapping):
        return lengths
    return [lengths[i] for i in range(len(lengths))]


def huffman_mean_bits(counts) -> float:
    """Mean Huffman code length in bits per symbol: ``sum_k f_k len_k / sum_k f_k``."""
    freq = _as_mapping(counts)
    total = sum(freq.values())
    if total == 0:
        return 0.0
    lengths = huffman_code_lengths(freq)
    return sum(freq[s] * lengths[s] for s in freq) / total


def entropy_bits(counts) -> float:
    """Shannon entropy of the symbol distribution (the lower bound on any prefix code's mean length)."""
    freq = [f for f in _as_mapping(counts).values() if f > 0]
    total = sum(freq)
    return -sum(f / total * math.log2(f / total) for f in freq) if total else 0.0


def level_counts(codes: Mapping[str, QuantCodes]) -> torch.Tensor:
    """Frequencies of each level index pooled over all quantized tensors (one code for the model).

    Counts are padded to the largest level count: index ``k`` of every tensor is the same symbol.
    """
    n_levels = max((c.n_levels for c in codes.values()), default=1)
    counts = torch.zeros(n_levels, dtype=torch.long)
    for c in codes.values():
        counts += torch.bincount(c.indices.reshape(-1).cpu(), minlength=n_levels)[:n_levels]
    return counts


def paper_size_bytes(n_quantized: int, n_full_precision: int, mean_bits: float, n_buckets: int) -> float:
    """The paper's size formula in bytes (``4 N_fp + b_eff N_q / 8 + 8 n_buckets``)."""
    return analytic_size_bytes(n_quantized, n_full_precision, mean_bits, BUCKET_OVERHEAD_BYTES * n_buckets)


def analytic_size_bytes(n_quantized: int, n_full_precision: int, mean_bits: float, scales: int) -> float:
    """The paper's formula with its per-bucket term replaced by the bytes of the codes' ``scales``."""
    return FP32_BYTES * n_full_precision + mean_bits * n_quantized / 8 + scales


def scale_bytes(codes: Mapping[str, QuantCodes]) -> int:
    """Bytes of the per-group scalars of every layout, each counted as one fp32 (the formula's last term)."""
    return sum(FP32_BYTES * layout_of(c.layout).scalars_per_group * c.n_groups for c in codes.values())


def model_sizes(parameters: Mapping[str, torch.Tensor], codes: Mapping[str, QuantCodes]) -> dict:
    """fp32 size, analytic (paper formula) size and Huffman bits per weight of a quantized model.

    ``parameters`` are all the model's parameters by name; ``codes`` the quantized ones among them, of
    any layout. ``n_buckets`` counts the groups that own scales (buckets, channels, steps);
    ``scale_bytes`` is their term of the analytic size.
    """
    n_total = sum(p.numel() for p in parameters.values())
    n_q = sum(c.indices.numel() for c in codes.values())
    n_buckets = sum(c.n_buckets for c in codes.values())
    counts = level_counts(codes) if codes else torch.zeros(1, dtype=torch.long)
    mean_bits = huffman_mean_bits(counts)
    scales = scale_bytes(codes)
    return {
        "params": n_total,
        "quantized_params": n_q,
        "fp_params": n_total - n_q,
        "n_buckets": n_buckets,
        "huffman_bits_per_weight": mean_bits,
        "entropy_bits_per_weight": entropy_bits(counts),
        "size_fp32": FP32_BYTES * n_total,
        "size_analytic": analytic_size_bytes(n_q, n_total - n_q, mean_bits, scales),
        "scale_bytes": scales,
    }
