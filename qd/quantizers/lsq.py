"""Learned step size quantization (LSQ; Esser, McKinstry, Bablani, Appuswamy and Modha, ICLR 2020).

A weight ``v`` is quantized to an integer level times a learned step size ``s``::

    v_hat = (clamp(round(v / s) + z, quant_min, quant_max) - z) * s

with ``z = 0`` and the signed levels ``-2**(b-1) .. 2**(b-1) - 1`` (``symmetric``, the paper's weights;
``step`` codes), or the unsigned levels ``0 .. 2**b - 1`` and an integer zero point ``z`` per step, set
from the minimum at initialisation and then held (``symmetric=False``; ``affine`` codes). One step is
shared by the whole tensor, by each channel (a slice along ``axis``) or by each flat bucket.

The weights receive the straight-through gradient (zero where clipped); the step receives the paper's
gradient (its eq. 3), scaled by ``g = 1 / sqrt(N * Q_P)``, ``N`` the weights sharing the step and
``Q_P = quant_max`` (the paper's count of positive levels: ``2**(b-1) - 1`` signed, ``2**b - 1``
unsigned)::

    d v_hat / d s = round(v / s) - v / s   inside the range,   (quant_min - z) or (quant_max - z) where clipped

Where a weight counts as clipped differs by half a step: PyTorch's learnable ops clip where the
*rounded* level ``round(v / s) + z`` falls outside ``quant_min .. quant_max`` (``clipping="pytorch"``, the
default); the paper's eq. 3 where ``v / s + z`` itself does (``clipping="paper"``). The two differ only
for weights within half a step beyond the end levels; the forward values are the same.

The step starts at ``2 * mean|v| / sqrt(Q_P)`` over the weights sharing it (the paper's initialisation).
Two implementations compute the same thing: :class:`LearnedStepQuantize` (this module's autograd
function, either clipping rule) and PyTorch's ``torch._fake_quantize_learnable_per_tensor_affine`` /
``_per_channel_affine`` (``implementation="torch"``, PyTorch's rule); the tests hold them to the same
forward values and gradients, and the step gradient to finite differences.

As ``v / s`` is computed as ``v * (1 / s)`` and rounded half to even before the zero point is added
(PyTorch's fake-quantize arithmetic), ``decode(quantizer.encode(v))`` equals ``quantizer(v)`` bit for bit.

Exercise it with ``pytest tests/test_lsq.py``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from qd.quant import check_bits
from qd.quantizers.layouts import QuantCodes, from_groups, group_sizes, integer_codes, integer_levels, to_groups

GRANULARITIES = ("tensor", "channel", "bucket")
IMPLEMENTATIONS = ("autograd", "torch")
CLIPPING = ("pytorch", "paper")
# Steps are clamped to this from below in every forward pass: an update that drives a step to 0 or
# below would otherwise divide by zero or flip the sign of every weight.
MIN_STEP = 1e-8


def lsq_range(bits: int, symmetric: bool = True) -> tuple[int, int]:
    """``(quant_min, quant_max)``: ``(-2**(b-1), 2**(b-1) - 1)`` signed, ``(0, 2**b - 1)`` unsigned."""
    check_bits(bits)
    if symmetric and bits < 2:
        raise ValueError("symmetric LSQ needs bits >= 2 (1 bit leaves the levels -1, 0 and Q_P = 0)")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def gradient_scale(numel_per_step: int, q_positive: int) -> float:
    """The paper's step-gradient scale ``g = 1 / sqrt(N * Q_P)``."""
    return 1.0 / math.sqrt(max(numel_per_step, 1) * q_positive)


def initial_step(rows: torch.Tensor, sizes: torch.Tensor, q_positive: int) -> torch.Tensor:
    """``2 * mean|v| / sqrt(Q_P)`` per row of ``(groups, m)`` rows holding ``sizes`` real elements each
    (zero padding adds nothing to the sums); at least :data:`MIN_STEP`."""
    mean_abs = rows.detach().abs().sum(dim=1) / sizes.clamp_min(1).to(rows.device, rows.dtype)
    return (2 * mean_abs / math.sqrt(q_positive)).clamp_min(MIN_STEP)


class LearnedStepQuantize(torch.autograd.Function):
    """LSQ on ``(groups, m)`` rows with one step per row; the gradient is summed per row and scaled by ``g``."""

    @staticmethod
    def forward(ctx, rows, step, zero_point, quant_min: int, quant_max: int, grad_scale: float,
                paper_clipping: bool = False):
        scaled = rows * (1.0 / step)[:, None]
        rounded = torch.round(scaled)
        level = rounded + zero_point[:, None] if zero_point is not None else rounded.clone()
        # clipped: where the rounded level is outside the range (PyTorch) or v / s + z is (the paper)
        unrounded = scaled + zero_point[:, None] if zero_point is not None else scaled
        inside = (unrounded > quant_min) & (unrounded < quant_max) if paper_clipping else \
            (level >= quant_min) & (level <= quant_max)
        from_zero = level.clamp_(quant_min, quant_max)  # q - z once the zero point is taken off
        if zero_point is not None:
            from_zero -= zero_point[:, None]
        out = from_zero * step[:, None]
        # d out / d step per element: round(v/s) - v/s inside, the clipped level (q - z) outside
        ctx.save_for_backward(inside, torch.where(inside, rounded - scaled, from_zero))
        ctx.grad_scale = grad_scale
        return out

    @staticmethod
    def backward(ctx, grad):
        inside, d_step = ctx.saved_tensors
        grad_rows = grad * inside if ctx.needs_input_grad[0] else None
        grad_step = (grad * d_step).sum(dim=1) * ctx.grad_scale if ctx.needs_input_grad[1] else None
        return grad_rows, grad_step, None, None, None, None, None


class LSQQuantizer(torch.nn.Module):
    """LSQ fake quantization of one weight tensor: ``quantizer(w)`` in the forward pass, ``step`` to train,
    ``encode(w)`` for the file.

    ``w`` at construction only sets the shape, the groups and the initial step (and zero points).
    """

    def __init__(self, w: torch.Tensor, bits: int, granularity: str = "tensor", bucket_size: int | None = 256,
                 axis: int = 0, symmetric: bool = True, implementation: str = "autograd", clipping: str = "pytorch"):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ValueError(f"LSQ granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"LSQ implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        if clipping not in CLIPPING:
            raise ValueError(f"LSQ clipping must be one of {CLIPPING}, got {clipping!r}")
        if implementation == "torch" and clipping != "pytorch":
            raise ValueError("LSQ clipping='paper' needs implementation='autograd' (PyTorch's ops clip by level)")
        if granularity == "bucket" and (bucket_size is None or bucket_size < 1):
            raise ValueError(f"LSQ per bucket needs a bucket_size >= 1, got {bucket_size!r}")
        self.bits, self.granularity, self.symmetric, self.implementation = bits, granularity, symmetric, implementation
        self.clipping = clipping
        self.quant_min, self.quant_max = lsq_range(bits, symmetric)
        self.shape = tuple(w.shape)
        self.axis = axis % max(w.dim(), 1) if granularity == "channel" else None
        self.bucket_size = bucket_size if granularity == "bucket" else None
        rows = to_groups(w.detach(), self.axis, self.bucket_size)
        sizes = group_sizes(self.shape, self.axis, self.bucket_size)
        self.numel_per_step = int(sizes.max()) if sizes.numel() else 0
        dtype = w.dtype if w.dtype.is_floating_point else torch.float32
        step = initial_step(rows.to(dtype), sizes, self.q_positive)
        self.step = torch.nn.Parameter(step)
        if symmetric:
            self.register_buffer("zero_point", None)
        else:  # the minimum's level at the initial step, then held
            lowest = rows.to(dtype).amin(dim=1).clamp(max=0) if rows.numel() else torch.zeros_like(step)
            self.register_buffer("zero_point", torch.round(-lowest / step).clamp(self.quant_min, self.quant_max))

    @property
    def q_positive(self) -> int:
        """``Q_P``, LSQ's count of positive levels (``quant_max``), in ``g`` and the initial step."""
        return self.quant_max

    @property
    def grad_scale(self) -> float:
        return gradient_scale(self.numel_per_step, self.q_positive)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if tuple(w.shape) != self.shape:
            raise ValueError(f"this LSQ quantizer was built for shape {self.shape}, got {tuple(w.shape)}")
        step = self.step.clamp_min(MIN_STEP)
        if self.implementation == "torch":
            return self._torch_ops(w, step)
        rows = to_groups(w, self.axis, self.bucket_size)
        out = LearnedStepQuantize.apply(rows, step, self.zero_point, self.quant_min, self.quant_max, self.grad_scale,
                                        self.clipping == "paper")
        return from_groups(out, self.shape, self.axis)

    def _torch_ops(self, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        zero_point = self.zero_point if self.zero_point is not None else torch.zeros_like(step.detach())
        args = (self.quant_min, self.quant_max, self.grad_scale)
        if self.granularity == "tensor":
            return torch._fake_quantize_learnable_per_tensor_affine(w, step, zero_point, *args)
        # on (groups, m) rows, axis 0: the op's step gradient has the wrong shape for a 1-D input
        rows = to_groups(w, self.axis, self.bucket_size)
        out = torch._fake_quantize_learnable_per_channel_affine(rows, step, zero_point, 0, *args)
        return from_groups(out, self.shape, self.axis)

    @torch.no_grad()
    def encode(self, w: torch.Tensor) -> QuantCodes:
        """``step`` codes (``affine`` when not symmetric) of ``self(w)``: integer levels and the steps."""
        step = self.step.detach().clamp_min(MIN_STEP)
        zero_point = self.zero_point.to(torch.int32) if self.zero_point is not None else None
        rows = to_groups(w.detach(), self.axis, self.bucket_size)
        levels = integer_levels(rows, step, zero_point, self.quant_min, self.quant_max)
        return integer_codes(from_groups(levels, self.shape, self.axis), step, zero_point, self.quant_min,
                             self.quant_max, self.shape, w.dtype, axis=self.axis, bucket_size=self.bucket_size)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity!r}, steps={self.step.numel()}, "
                f"symmetric={self.symmetric}, implementation={self.implementation!r}, clipping={self.clipping!r}")


class LSQQuantizers(torch.nn.Module):
    """One :class:`LSQQuantizer` per named weight, as one module: its state dict holds every step (and
    zero point), so a training engine that checkpoints modules checkpoints them."""

    def __init__(self, weights: Mapping[str, torch.Tensor], bits: int, **options):
        super().__init__()
        self.names = list(weights)
        self.quantizers = torch.nn.ModuleList(LSQQuantizer(w, bits, **options) for w in weights.values())

    def __getitem__(self, name: str) -> LSQQuantizer:
        return self.quantizers[self.names.index(name)]

    def items(self):
        return zip(self.names, self.quantizers)

    def steps(self) -> list[torch.nn.Parameter]:
        """The learned step sizes (their own parameter group: learning rate, no weight decay)."""
        return [q.step for q in self.quantizers]

    def forward(self, weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The quantized weights by name, differentiable in the weights and the steps."""
        return {name: q(weights[name]) for name, q in self.items()}

    def encode(self, weights: Mapping[str, torch.Tensor]) -> dict[str, QuantCodes]:
        return {name: q.encode(weights[name]) for name, q in self.items()}
