"""Quantized tensors as ONNX initializers: low-bit level indices, their scales, and the nodes that decode them.

Each quantized tensor of an artefact (``qd.quantizers.layouts``) becomes an integer initializer of its
level indices, in the smallest unsigned container that holds its levels (``uint2`` for up to 4 levels,
``uint4`` up to 16, ``uint8`` up to 256, ``uint16`` beyond; ONNX packs ``uint2`` four and ``uint4`` two
to a byte), its per-group numbers as fp32 initializers, and a few nodes that turn them back into the
weight under its state-dict name, which is what the rest of the graph reads. ``uint2`` exists from
opset 25; at opset 21 a 2-bit tensor is stored in ``uint4`` (and says so in its description).

Layouts and what they become (``q``: the indices; ``N``: the tensor's elements):

* ``minmax``, uniform grid (the paper's): ``value = lo + index * (hi - lo) / (2**bits - 1)`` per bucket.
  ``DequantizeLinear`` computes ``(q - zero_point) * scale``; with ``scale = (hi - lo) / (2**bits - 1)``
  the zero point would be ``-lo / scale``, which is not an integer, so the zero point is 0 and ``lo`` is
  added afterwards: ``Add(DequantizeLinear(q, step), lo)``. Buckets of ``d`` consecutive elements of the
  flattened tensor are the rows of the tensor reshaped to ``(n, d)``: ``q`` is stored as that matrix
  (the last bucket zero-padded when ``d`` does not divide ``N``), ``DequantizeLinear`` runs with
  ``axis=1, block_size=d`` and one step per row, ``lo`` is an ``(n, 1)`` column, and the result is
  reshaped (after a ``Slice`` dropping the padding) to the weight's shape. One bucket (no bucketing)
  is per-tensor ``DequantizeLinear`` on ``q`` in the weight's own shape. Two fp32 numbers per bucket
  (step and lo), as the paper's min and max.
  The values equal ``qd``'s decoding to fp32 rounding, not bit for bit. ``qd`` decodes with
  ``torch.lerp(lo, hi, index / (2**bits - 1))``: one rounding of a fused multiply-add where the CPU has
  one, of ``hi - (hi - lo)(1 - w)`` above ``w = 0.5`` (so the rounding of ``hi - lo`` shows), and another
  formula on CPUs without FMA; the graph rounds the step, the product and the sum. With ``M = max(|lo|,
  |hi|)`` of the bucket and every term at most ``hi - lo <= 2 M``, the step's rounding costs at most 2
  units in the last place of ``M`` (ulps), the product's 1, the position's and ``hi - lo``'s on torch's
  side 1 each, the two final roundings half an ulp each: at most 6 ulps of ``M`` apart (3.25 seen on
  random tensors; ``tests/test_onnx.py`` asserts the bound).
* ``minmax``, non-uniform points (differentiable quantization): ``Gather`` of the points by index, then
  ``lo + point * (hi - lo)``; ``lo`` and ``hi - lo`` per bucket (two numbers, as min and max), the
  points once per tensor. No step to round: at most 3 ulps of ``M`` from ``qd``'s values (2 seen).
* ``affine`` and ``step`` (integer levels ``quant_min .. quant_max``, a scale and, for ``affine``, a zero
  point per group): ``DequantizeLinear`` with the zero point moved to the index range
  (``zero_point - quant_min``; ``step`` codes: ``-quant_min``), so unsigned containers hold every
  layout. Per-channel groups (``axis``, or buckets of one output channel) use ``axis``; other buckets
  use ``block_size`` as above; one group is per-tensor. Exact: ONNX's ``(q - zero_point) * scale`` is
  ``qd``'s arithmetic.
* ``codebook``: ``Gather`` of the table by index. Exact.

Exercise it with ``pytest tests/test_onnx.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from onnx import ModelProto, TensorProto, helper, numpy_helper

from qd.onnx.errors import OnnxExportError
from qd.quantizers.layouts import AFFINE, CODEBOOK, MINMAX, STEP, QuantCodes

MIN_OPSET = 21  # DequantizeLinear with block_size and int4/uint4 containers


@dataclass(frozen=True)
class Container:
    """An unsigned integer tensor type that level indices are stored in."""

    name: str
    bits: int
    tensor_type: int
    min_opset: int

    @property
    def levels(self) -> int:
        return 1 << self.bits


CONTAINERS = (
    Container("uint2", 2, TensorProto.UINT2, 25),
    Container("uint4", 4, TensorProto.UINT4, MIN_OPSET),
    Container("uint8", 8, TensorProto.UINT8, MIN_OPSET),
    Container("uint16", 16, TensorProto.UINT16, MIN_OPSET),
)


def container_for(n_levels: int, opset: int) -> Container:
    """The smallest container of ``n_levels`` level indices available at ``opset``."""
    for c in CONTAINERS:
        if c.levels >= n_levels and c.min_opset <= opset:
            return c
    raise OnnxExportError(f"{n_levels} quantization levels do not fit any ONNX integer container "
                          f"({', '.join(c.name for c in CONTAINERS)})")


def required_opset(codes: dict[str, QuantCodes]) -> int:
    """The lowest opset at which every tensor gets its smallest container (21, or 25 for 2-bit ones)."""
    smallest = [container_for(c.n_levels, max(x.min_opset for x in CONTAINERS)) for c in codes.values()]
    return max([MIN_OPSET] + [c.min_opset for c in smallest])


@dataclass
class _Builder:
    """Initializers and nodes of one tensor's decoding, named after the tensor (``<name>::<part>``)."""

    name: str
    initializers: list = field(default_factory=list)
    nodes: list = field(default_factory=list)

    def const(self, part: str, array: np.ndarray) -> str:
        name = f"{self.name}::{part}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def indices(self, q: np.ndarray, container: Container) -> str:
        """Level indices as an initializer of ``container`` (``numpy_helper`` packs uint4 and uint2)."""
        dtype = helper.tensor_dtype_to_np_dtype(container.tensor_type)
        return self.const("q", q.astype(dtype))

    @property
    def index_bytes(self) -> int:
        return sum(len(t.raw_data) for t in self.initializers if t.name == f"{self.name}::q")

    def node(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        # short intermediate names and no node names: in a small model the graph's strings weigh more
        # than its weights
        output = output or f"{self.name}::{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def rename_last(self, output: str) -> None:
        """Make the last node write ``output`` (the tensor the graph reads) instead of its own name."""
        self.nodes[-1].output[0] = output


@dataclass(frozen=True)
class Groups:
    """How a tensor's groups (the owners of its scales) lie in ONNX: one, along an axis, or in blocks."""

    kind: str  # "tensor", "axis" or "blocks"
    axis: int = 0
    rows: int = 1  # blocks: the rows of the (rows, block) matrix
    block: int = 0  # blocks: the bucket size
    padding: int = 0  # blocks: zero indices after the last element

    def param_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of a per-group parameter where it broadcasts against the stored indices."""
        if self.kind == "tensor":
            return ()
        if self.kind == "axis":
            return tuple(shape[self.axis] if i == self.axis else 1 for i in range(len(shape)))
        return (self.rows, 1)


def groups_of(codes: QuantCodes) -> Groups:
    """Where the groups of ``codes`` map: per channel onto ``axis``, flat buckets onto blocks of the
    tensor reshaped to ``(n, d)``, a single group onto the whole tensor."""
    n = math.prod(codes.shape)
    if codes.axis is not None:
        return Groups("axis", axis=codes.axis)
    d = codes.bucket_size
    if d is None or d >= n or codes.n_groups == 1:
        return Groups("tensor")
    per_row = len(codes.shape) >= 2 and codes.shape[0] > 0 and d * codes.shape[0] == n
    if per_row and codes.layout in (AFFINE, STEP):  # per output channel, stated as buckets of one row
        return Groups("axis", axis=0)
    rows = -(-n // d)
    return Groups("blocks", rows=rows, block=d, padding=rows * d - n)


def _stored_indices(codes: QuantCodes, groups: Groups) -> np.ndarray:
    """The indices in the stored layout: the weight's shape, or the zero-padded ``(n, d)`` matrix."""
    q = codes.indices.detach().cpu().numpy().astype(np.int64)
    if groups.kind != "blocks":
        return q.reshape(codes.shape)
    return np.concatenate([q, np.zeros(groups.padding, np.int64)]).reshape(groups.rows, groups.block)


def _restore_shape(b: _Builder, values: str, codes: QuantCodes, groups: Groups) -> None:
    """Turn the decoded ``values`` (stored layout) into the tensor ``b.name`` of the weight's shape."""
    shape = np.asarray(codes.shape, dtype=np.int64)
    if groups.kind != "blocks":
        b.rename_last(b.name)  # already in the weight's shape
        return
    if groups.padding:
        flat = b.node("Reshape", [values, b.const("flat", np.asarray([-1], np.int64))])
        n = math.prod(codes.shape)
        values = b.node("Slice", [flat, b.const("start", np.asarray([0], np.int64)),
                                  b.const("end", np.asarray([n], np.int64))])
    b.node("Reshape", [values, b.const("shape", shape)], b.name)


def _dequantize(b: _Builder, q: str, scale: np.ndarray, zero_point: np.ndarray | None, container: Container,
                groups: Groups) -> str:
    """``DequantizeLinear`` of ``q`` with per-group ``scale`` (and zero point) laid out as ``groups`` says."""
    attrs = {}
    if groups.kind == "axis":
        attrs = {"axis": groups.axis}
        scale = scale.reshape(-1)
        zero_point = None if zero_point is None else zero_point.reshape(-1)
    elif groups.kind == "blocks":
        attrs = {"axis": 1, "block_size": groups.block}
        scale = scale.reshape(groups.rows, 1)
        zero_point = None if zero_point is None else zero_point.reshape(groups.rows, 1)
    else:
        scale = scale.reshape(())
        zero_point = None if zero_point is None else zero_point.reshape(())
    inputs = [q, b.const("scale", scale.astype(np.float32))]
    if zero_point is not None:
        dtype = helper.tensor_dtype_to_np_dtype(container.tensor_type)
        inputs.append(b.const("zero_point", zero_point.astype(dtype)))
    return b.node("DequantizeLinear", inputs, **attrs)


def _numpy(t: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return t.detach().cpu().float().numpy().reshape(shape)


def _minmax_uniform(b: _Builder, codes: QuantCodes, container: Container, groups: Groups, shape) -> str:
    q = b.indices(_stored_indices(codes, groups), container)
    # the step as qd.quantizers.layouts.level_spacing computes it: (hi - lo) / (levels - 1) in fp32
    step = (codes.hi - codes.lo) / max(codes.n_levels - 1, 1)
    scaled = _dequantize(b, q, _numpy(step, (-1,)), None, container, groups)
    return b.node("Add", [scaled, b.const("lo", _numpy(codes.lo, shape))])


def _minmax_points(b: _Builder, codes: QuantCodes, container: Container, groups: Groups, shape) -> str:
    q = b.node("Cast", [b.indices(_stored_indices(codes, groups), container)], to=TensorProto.INT64)
    p = b.node("Gather", [b.const("points", _numpy(codes.grid, (-1,))), q])
    # lo + p * (hi - lo), with hi - lo rounded to fp32 as torch.lerp rounds it
    scaled = b.node("Mul", [p, b.const("range", _numpy(codes.hi - codes.lo, shape))])
    return b.node("Add", [scaled, b.const("lo", _numpy(codes.lo, shape))])


def _integer(b: _Builder, codes: QuantCodes, container: Container, groups: Groups, shape) -> str:
    q = b.indices(_stored_indices(codes, groups), container)
    if codes.layout == AFFINE:
        zero_point = codes.zero_point.detach().cpu().long().numpy() - codes.quant_min
    else:  # step codes: level = index + quant_min, no zero point of their own
        zero_point = np.full(codes.n_groups, -codes.quant_min, dtype=np.int64)
    if zero_point.min() < 0 or zero_point.max() >= container.levels:
        raise OnnxExportError(f"{b.name}: zero points {zero_point.min()}..{zero_point.max()} (in index units) lie "
                              f"outside the {container.name} container of its {codes.n_levels} levels")
    scale = codes.scale.detach().cpu().numpy()
    if scale.dtype != np.float32:
        raise OnnxExportError(f"{b.name}: scales of dtype {scale.dtype}; ONNX export writes fp32 scales only")
    return _dequantize(b, q, scale, zero_point if zero_point.any() else None, container, groups)


def _codebook(b: _Builder, codes: QuantCodes, container: Container, groups: Groups, shape) -> str:
    q = b.node("Cast", [b.indices(_stored_indices(codes, groups), container)], to=TensorProto.INT64)
    return b.node("Gather", [b.const("codebook", _numpy(codes.grid, (-1,))), q])


def _encoding(codes: QuantCodes) -> tuple[str, object]:
    if codes.layout == MINMAX:
        return ("DequantizeLinear + Add", _minmax_uniform) if codes.uniform else ("Gather + Mul + Add", _minmax_points)
    if codes.layout in (AFFINE, STEP):
        return "DequantizeLinear", _integer
    if codes.layout == CODEBOOK:
        return "Gather", _codebook
    raise OnnxExportError(f"no ONNX encoding for the {codes.layout!r} layout")


@dataclass
class EncodedTensor:
    """What one quantized tensor adds to a graph, and how it was laid out."""

    initializers: list
    nodes: list
    info: dict


def encode_tensor(name: str, codes: QuantCodes, opset: int) -> EncodedTensor:
    """The initializers and nodes that produce the fp32 tensor ``name`` from its stored codes."""
    if codes.dtype != torch.float32:
        raise OnnxExportError(f"{name}: quantized tensor of dtype {codes.dtype}; ONNX export handles fp32 models")
    container = container_for(codes.n_levels, opset)
    groups = groups_of(codes)
    ops, encode = _encoding(codes)
    b = _Builder(name)
    values = encode(b, codes, container, groups, groups.param_shape(codes.shape))
    _restore_shape(b, values, codes, groups)
    stored = sum(len(t.raw_data) for t in b.initializers)
    info = {"layout": codes.layout, "grid": "uniform" if codes.uniform else "points", "ops": ops,
            "container": container.name, "levels": codes.n_levels, "groups": groups.kind, "n_groups": codes.n_groups,
            "axis": groups.axis if groups.kind == "axis" else None,
            "block_size": groups.block if groups.kind == "blocks" else None, "padding": groups.padding,
            "index_bytes": b.index_bytes, "stored_bytes": stored}
    return EncodedTensor(b.initializers, b.nodes, info)


def quantize_initializers(model: ModelProto, codes: dict[str, QuantCodes], opset: int) -> dict[str, dict]:
    """Replace, in place, every fp32 initializer of ``model`` that has codes by its stored codes and the
    nodes that decode them (put first in the graph); the layout description of each, by name."""
    graph = model.graph
    by_name = {t.name: t for t in graph.initializer}
    done, decoders = {}, []
    for name, c in codes.items():
        if name not in by_name:
            continue  # the other graph of a translation model holds it
        if tuple(by_name[name].dims) != tuple(c.shape):
            raise OnnxExportError(f"{name}: the exported graph holds it with shape {tuple(by_name[name].dims)}, "
                                  f"the artefact's codes have shape {tuple(c.shape)}")
        enc = encode_tensor(name, c, opset)
        graph.initializer.remove(by_name[name])
        graph.initializer.extend(enc.initializers)
        decoders.extend(enc.nodes)
        done[name] = enc.info
    nodes = decoders + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return done
