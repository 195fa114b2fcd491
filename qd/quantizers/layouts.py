"""Quantized codes and their layouts: what a quantizer's output is made of, and how it decodes.

A quantized tensor is stored as one integer *level index* per element, ``0 .. n_levels - 1`` counted
from its lowest level up, plus what turns indices back into values. The codes' ``layout`` names that
second part:

* ``minmax`` (the paper's, notes 1.2-1.4): flat buckets of ``bucket_size`` elements, each with its
  min ``lo`` and max ``hi``; an index picks a position of ``grid`` in [0, 1] (the uniform levels
  ``k / (2**bits - 1)`` or non-uniform points) and the value is ``lerp(lo, hi, position)``;
* ``affine``: integer levels with a scale and a zero point per group (PyTorch's
  ``fake_quantize_per_channel_affine``): index ``i`` is the level ``q = quant_min + i`` and the value
  is ``(q - zero_point) * scale``;
* ``step``: a learned step size (LSQ) per group: as ``affine`` with the zero point 0, ``q * scale``;
* ``codebook``: one table of values for the whole tensor, ``grid``; the value is ``grid[i]``.

A *group* is what owns one set of scales: a flat bucket of ``bucket_size`` consecutive elements
(``None``: the whole tensor), or, for ``affine`` and ``step`` codes with ``axis`` set, one slice along
that dimension (per channel). Slices along axis 0, the output channels of a weight, are the flat
buckets of ``numel / shape[0]`` elements, and are stated so (``axis`` stays ``None``): code that groups
elements by ``bucket_size`` reads per-output-channel codes as they are. ``n_buckets`` counts the groups
(0 for a codebook).

So that code written for min-max codes keeps working, every layout fills the fields it does not need
with what they mean for it: ``lo`` and ``hi`` are the decoded values of each group's lowest and highest
level, ``grid`` the level positions ``k / (n_levels - 1)`` (affine, step) or the codebook values,
``uniform`` whether the levels are evenly spaced.

The model's one Huffman code pools level indices as they are: symbol ``k`` is the ``k``-th level from
the bottom of its tensor, whatever the layout, and tensors with fewer levels use the first symbols of
the alphabet (``qd.size.level_counts``).

Exercise it with ``pytest tests/test_quant.py tests/test_per_channel.py tests/test_lsq.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MINMAX, AFFINE, STEP, CODEBOOK = "minmax", "affine", "step", "codebook"


@dataclass(frozen=True)
class Layout:
    """What a layout stores besides the level indices, as the size accounting and the file see it."""

    name: str
    scalars_per_group: int  # numbers per group the analytic size counts (as fp32 each)
    zero_point: bool  # integer levels with a zero point per group
    integer_levels: bool  # levels are ``quant_min .. quant_max`` times a scale


LAYOUTS = {
    MINMAX: Layout(MINMAX, 2, False, False),  # min and max (the paper's 8 bytes per bucket)
    AFFINE: Layout(AFFINE, 2, True, True),  # scale and zero point
    STEP: Layout(STEP, 1, False, True),  # the step size
    CODEBOOK: Layout(CODEBOOK, 0, False, False),  # the table is per tensor, not counted (as DQ's points)
}


def layout_of(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown quantized-codes layout {name!r}; known: {sorted(LAYOUTS)}")
    return LAYOUTS[name]


@dataclass
class QuantCodes:
    """A quantized tensor as stored: level indices and what its layout needs to decode them.

    ``decode(codes)`` rebuilds exactly the tensor the quantizer returned.
    """

    indices: torch.Tensor  # int64, flattened, unpadded: one level index per element
    lo: torch.Tensor  # (n_buckets,) bucket minimum; other layouts: each group's lowest level value
    hi: torch.Tensor  # (n_buckets,) bucket maximum; other layouts: each group's highest level value
    grid: torch.Tensor  # (n_levels,) level positions in [0, 1]; codebook: the values
    bucket_size: int | None
    shape: tuple[int, ...]
    uniform: bool
    layout: str = MINMAX
    scale: torch.Tensor | None = None  # affine, step: (n_groups,) the step between levels
    zero_point: torch.Tensor | None = None  # affine: (n_groups,) integer level of the value 0
    axis: int | None = None  # affine, step: groups are slices along this dim; None: flat buckets
    quant_min: int = 0  # affine, step: the integer level of index 0

    def __post_init__(self):
        spec = layout_of(self.layout)
        if spec.integer_levels and self.scale is None:
            raise ValueError(f"{self.layout} codes need a scale per group")
        if spec.zero_point != (self.zero_point is not None):
            raise ValueError(f"{self.layout} codes {'need' if spec.zero_point else 'have no'} zero points")
        if self.axis is not None and (not spec.integer_levels or self.bucket_size is not None):
            raise ValueError("groups along an axis are for affine or step codes without a bucket size")

    @property
    def rng(self) -> torch.Tensor:
        return self.hi - self.lo

    @property
    def n_buckets(self) -> int:
        """Groups that own scales: buckets, channels or 1 per tensor (0 for a codebook)."""
        return self.lo.numel()

    @property
    def n_groups(self) -> int:
        return self.n_buckets

    @property
    def n_levels(self) -> int:
        return self.grid.numel()

    @property
    def quant_max(self) -> int:
        """The integer level of the last index (affine, step)."""
        return self.quant_min + self.n_levels - 1

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the decoded tensor."""
        return self.lo.dtype


def dequantize(lo: torch.Tensor, hi: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``sc^-1``: level positions in [0, 1] back to weights (the one formula every min-max path uses).

    ``lerp`` is exact at both ends (position 0 gives the min, 1 the max), which ``lo + rng * p``
    is not: ``lo + (hi - lo)`` is often one ulp off ``hi``.
    """
    return torch.lerp(lo, hi, positions)


# ---------------------------------------------------------------------------------------------------
# groups: flat buckets or slices along an axis


def n_groups(shape: tuple[int, ...], axis: int | None, bucket_size: int | None) -> int:
    if axis is not None:
        return shape[axis]
    n = math.prod(shape)
    return 1 if bucket_size is None or n == 0 else -(-n // bucket_size)


def to_groups(x: torch.Tensor, axis: int | None = None, bucket_size: int | None = None) -> torch.Tensor:
    """``x`` as ``(n_groups, group_size)`` rows: slices along ``axis``, or flat buckets zero-padded at the end.

    Autograd flows through it (a padded element's output is dropped by :func:`from_groups`, so its
    gradient is zero). Empty tensors give one empty row.
    """
    if axis is not None:
        return x.movedim(axis, 0).reshape(x.shape[axis], -1)
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        return flat.view(1, 0)
    d = n if bucket_size is None else bucket_size
    if d < 1:
        raise ValueError(f"bucket_size must be >= 1 or None, got {bucket_size!r}")
    pad = (-n) % d
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, d)


def from_groups(rows: torch.Tensor, shape: tuple[int, ...], axis: int | None = None) -> torch.Tensor:
    """Inverse of :func:`to_groups`: drop the padding and restore ``shape``."""
    if axis is not None:
        moved = (shape[axis],) + tuple(s for i, s in enumerate(shape) if i != axis)
        return rows.reshape(moved).movedim(0, axis)
    return rows.reshape(-1)[: math.prod(shape)].view(shape)


def group_sizes(shape: tuple[int, ...], axis: int | None, bucket_size: int | None) -> torch.Tensor:
    """Real (unpadded) elements of each group."""
    n = math.prod(shape)
    if axis is not None:
        return torch.full((shape[axis],), n // shape[axis] if shape[axis] else 0, dtype=torch.long)
    d = n if bucket_size is None else bucket_size
    g = n_groups(shape, axis, bucket_size)
    sizes = torch.full((g,), d, dtype=torch.long)
    if n:
        sizes[-1] = n - (g - 1) * d
    return sizes


def group_index(codes: QuantCodes) -> torch.Tensor:
    """The group of every element of the flattened tensor (int64), for per-group scales."""
    n = codes.indices.numel()
    at = torch.arange(n, device=codes.indices.device)
    if codes.axis is not None:
        inner = math.prod(codes.shape[codes.axis + 1:])
        return (at // inner) % codes.shape[codes.axis]
    d = codes.bucket_size if codes.bucket_size is not None else max(n, 1)
    return at // d


# ---------------------------------------------------------------------------------------------------
# integer levels (affine and step layouts)


def _compute_dtype(dtype: torch.dtype, scale_dtype: torch.dtype) -> torch.dtype:
    """The dtype PyTorch's fake-quantize kernels compute in: the input's, but at least the scale's."""
    return torch.promote_types(dtype, scale_dtype)


def integer_levels(rows: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                   quant_min: int, quant_max: int) -> torch.Tensor:
    """Integer levels ``clamp(round(x * (1 / scale)) + zero_point, quant_min, quant_max)`` of ``(groups, m)`` rows.

    The very arithmetic of ``torch.fake_quantize_per_channel_affine`` (and of the learnable ops):
    multiply by the reciprocal of the scale, round half to even, *then* add the integer zero point;
    dividing by the scale, or rounding after adding the zero point, changes some levels. int64.
    """
    cd = _compute_dtype(rows.dtype, scale.dtype)
    inverse = (1.0 / scale).to(cd)
    q = torch.round(rows.detach().to(cd) * inverse[:, None])
    if zero_point is not None:
        q += zero_point.to(cd)[:, None]
    return q.clamp_(quant_min, quant_max).long()


def level_values(levels: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
                 dtype: torch.dtype) -> torch.Tensor:
    """``(q - zero_point) * scale`` elementwise (scale and zero point given per element or broadcast)."""
    if zero_point is not None:
        levels = levels - zero_point.long()
    cd = _compute_dtype(dtype, scale.dtype)
    return (levels.to(cd) * scale.to(cd)).to(dtype)


def integer_codes(levels: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, quant_min: int,
                  quant_max: int, shape: tuple[int, ...], dtype: torch.dtype, axis: int | None = None,
                  bucket_size: int | None = None) -> QuantCodes:
    """Codes of integer ``levels`` (``quant_min .. quant_max``, ``shape``'s elements in order).

    With a zero point per group the layout is ``affine``, without it ``step``. ``scale`` and
    ``zero_point`` have one entry per group (``axis`` or flat buckets of ``bucket_size``); groups along
    axis 0 are stated as flat buckets of ``numel / shape[0]`` elements (the same groups).
    """
    if quant_max <= quant_min:
        raise ValueError(f"quant_max must exceed quant_min, got {quant_min}..{quant_max}")
    shape = tuple(shape)
    if axis is not None and axis % len(shape) == 0 and math.prod(shape) > 0:
        axis, bucket_size = None, math.prod(shape) // shape[0]
    groups = n_groups(shape, axis, bucket_size)
    scale = scale.detach().reshape(-1)
    if scale.numel() != groups:
        raise ValueError(f"{scale.numel()} scales for {groups} groups of shape {shape}")
    if zero_point is not None:
        zero_point = zero_point.detach().reshape(-1)
        if zero_point.numel() != groups:
            raise ValueError(f"{zero_point.numel()} zero points for {groups} groups of shape {shape}")
    n_levels = quant_max - quant_min + 1
    ends = torch.tensor([quant_min, quant_max], device=scale.device).expand(groups, 2)
    zp = zero_point[:, None] if zero_point is not None else None
    lo_hi = level_values(ends, scale[:, None], zp, dtype)
    return QuantCodes(
        indices=(levels.detach().reshape(-1).long() - quant_min),
        lo=lo_hi[:, 0].contiguous(),
        hi=lo_hi[:, 1].contiguous(),
        grid=torch.arange(n_levels, dtype=scale.dtype, device=scale.device) / (n_levels - 1),
        bucket_size=bucket_size,
        shape=shape,
        uniform=True,
        layout=AFFINE if zero_point is not None else STEP,
        scale=scale.clone(),
        zero_point=zero_point.clone() if zero_point is not None else None,
        axis=axis,
        quant_min=quant_min,
    )


# ---------------------------------------------------------------------------------------------------
# codebook layout


def encode_codebook(x: torch.Tensor, values: torch.Tensor) -> QuantCodes:
    """Each element to the nearest of the sorted ``values`` (a tie at a midpoint goes to the lower value)."""
    values = values.detach().reshape(-1).to(x.dtype)
    if values.numel() == 0 or bool((values[1:] < values[:-1]).any()):
        raise ValueError(f"a codebook must be a non-empty sorted vector of values, got {values.tolist()[:8]}")
    idx = torch.bucketize(x.detach().reshape(-1), (values[1:] + values[:-1]) / 2)
    empty = values.new_empty(0)
    return QuantCodes(indices=idx.long(), lo=empty, hi=empty.clone(), grid=values.clone(), bucket_size=None,
                      shape=tuple(x.shape), uniform=False, layout=CODEBOOK)


# ---------------------------------------------------------------------------------------------------
# decoding


def decode(codes: QuantCodes) -> torch.Tensor:
    """The quantized tensor that ``codes`` describe, whatever their layout."""
    spec = layout_of(codes.layout)
    if codes.layout == CODEBOOK:
        return codes.grid[codes.indices].view(codes.shape)
    if spec.integer_levels:
        g = group_index(codes)
        zp = codes.zero_point[g] if codes.zero_point is not None else None
        return level_values(codes.indices + codes.quant_min, codes.scale[g], zp, codes.dtype).view(codes.shape)
    n = codes.indices.numel()
    d = codes.bucket_size if codes.bucket_size is not None else max(n, 1)
    positions = codes.grid[codes.indices]
    pad = (-n) % d
    if pad:
        positions = torch.cat([positions, positions[-1:].expand(pad)])
    b = positions.view(-1, d)
    out = dequantize(codes.lo.view(-1, 1), codes.hi.view(-1, 1), b)
    return out.reshape(-1)[:n].view(codes.shape)


def level_spacing(codes: QuantCodes) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(offset, step)`` per group with ``value = offset + step * index`` (up to rounding), for evenly
    spaced levels; ``None`` for non-uniform points and codebooks. ``group_index`` maps elements to groups."""
    if not codes.uniform or codes.layout == CODEBOOK:
        return None
    if layout_of(codes.layout).integer_levels:
        return codes.lo, codes.scale.to(codes.dtype)
    return codes.lo, (codes.hi - codes.lo) / max(codes.n_levels - 1, 1)
