"""Per-channel quantization-aware training: ``torch.fake_quantize_per_channel_affine`` on min-max scales.

Each output channel (a slice along ``axis``, 0 by default: the rows of a linear weight, the filters of a
convolution) gets its own scale and zero point from its current min and max, by PyTorch's per-channel
min-max rule for affine quantization to ``quant_min = 0 .. quant_max = 2**bits - 1``::

    lo = min(min_c, 0),  hi = max(max_c, 0)           (the range always holds 0, so 0 is exact)
    scale = max((hi - lo) / (quant_max - quant_min), eps_fp32)
    zero_point = clamp(quant_min - round(lo / scale), quant_min, quant_max)

and the forward pass is PyTorch's core op (not the ``torch.ao.quantization`` modules); its backward
passes the gradient straight through to the weights inside the range. The scales follow the weights at
every call; nothing is learned besides the weights. ``encode`` gives ``affine`` codes whose
``decode`` is bit for bit the op's output.

Exercise it with ``pytest tests/test_per_channel.py``.
"""
from __future__ import annotations

import torch

from qd.quant import check_bits
from qd.quantizers.layouts import QuantCodes, from_groups, integer_codes, integer_levels, to_groups

SCALE_EPS = torch.finfo(torch.float32).eps  # the smallest scale (a constant channel), as PyTorch's observers


def minmax_qparams(w: torch.Tensor, axis: int, quant_min: int, quant_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 scale and int32 zero point of every slice of ``w`` along ``axis`` (see the module docstring)."""
    rows = to_groups(w.detach(), axis=axis)
    lo = rows.amin(dim=1).clamp(max=0).float()
    hi = rows.amax(dim=1).clamp(min=0).float()
    scale = ((hi - lo) / float(quant_max - quant_min)).clamp_min(SCALE_EPS)
    zero_point = (quant_min - torch.round(lo / scale)).clamp(quant_min, quant_max).to(torch.int32)
    return scale, zero_point


class PerChannelQuantizer:
    """Fake quantization of a weight to ``bits`` per channel; ``__call__`` for training, ``encode`` for the file."""

    def __init__(self, bits: int, axis: int = 0):
        check_bits(bits)
        self.bits, self.axis = bits, axis
        self.quant_min, self.quant_max = 0, 2**bits - 1

    def qparams(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return minmax_qparams(w, self.axis, self.quant_min, self.quant_max)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """The fake-quantized weight; differentiable in ``w`` (straight through inside the range)."""
        scale, zero_point = self.qparams(w)
        return torch.fake_quantize_per_channel_affine(w, scale, zero_point, self.axis, self.quant_min, self.quant_max)

    def encode(self, w: torch.Tensor) -> QuantCodes:
        """``affine`` codes of ``self(w)``: integer levels along ``axis``, a scale and zero point per channel."""
        scale, zero_point = self.qparams(w)
        rows = to_groups(w.detach(), axis=self.axis)
        levels = integer_levels(rows, scale, zero_point, self.quant_min, self.quant_max)
        return integer_codes(from_groups(levels, tuple(w.shape), self.axis), scale, zero_point, self.quant_min,
                             self.quant_max, tuple(w.shape), w.dtype, axis=self.axis)

    def parameters(self) -> list[torch.nn.Parameter]:
        """Nothing to learn: the scales follow the weights."""
        return []

    def __repr__(self) -> str:
        return f"PerChannelQuantizer(bits={self.bits}, axis={self.axis})"
