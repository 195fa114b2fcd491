"""An artefact (``model.qda``) as ONNX: the traced graphs with the quantized weights stored as integers.

``export_onnx`` loads the artefact (``qd.run.model_from_artefact``), traces the task's graphs
(``qd.onnx.graphs``), replaces each quantized weight by its level indices, scales and decoding nodes
(``qd.onnx.weights``; ``weights="fp32"`` keeps the decoded weights as fp32 initializers instead: the
fp32 baseline and the integer path's input), checks each model with ``onnx.checker`` and writes it
atomically. A classifier is one file, ``out``; a translation model is two, ``out`` with the suffix
``.encoder.onnx`` and ``.decoder.onnx`` (:func:`onnx_files` names them without exporting).

The returned description holds the files, the opset, the layout of every quantized tensor and four
sizes in bytes: the ONNX files, the ``.qda`` artefact, the paper's analytic size (Huffman-coded indices,
``qd.size.model_sizes``) and the same formula at the fixed width the ONNX file stores each index in
(``size_fixed_width``: every tensor of the graphs in fp32 except the quantized ones, which count their
container's bits per element plus 4 bytes per per-group number). The ONNX file is that fixed-width
size plus the graph's structure, the padding of the last bucket and the non-uniform point tables.

Try: ``python -m qd.onnx.export results/demo/digits/student3/qd/b4-d256/seed0/model.qda /tmp/s3.onnx``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import onnx
from onnx import ModelProto, helper, version_converter

from qd.io import atomic_write_bytes
from qd.onnx.errors import OnnxExportError
from qd.onnx.graphs import task_graphs
from qd.onnx.weights import CONTAINERS, MIN_OPSET, quantize_initializers, required_opset
from qd.quantizers.layouts import layout_of
from qd.run import model_from_artefact
from qd.size import model_sizes
from qd.tasks import DEFAULT_KIND

WEIGHTS = ("quantized", "fp32")
ROLES = {"classification": ("model",), "translation": ("encoder", "decoder")}


def onnx_files(out: str | Path, kind: str = "classification") -> dict[str, Path]:
    """The files :func:`export_onnx` writes for ``out``, by role (what a workflow rule declares)."""
    out = Path(out)
    if kind not in ROLES:
        raise OnnxExportError(f"ONNX export handles the task kinds {sorted(ROLES)}, not {kind!r}")
    if kind == "classification":
        return {"model": out}
    stem = out.name[: -len(".onnx")] if out.name.endswith(".onnx") else out.name
    return {role: out.with_name(f"{stem}.{role}.onnx") for role in ROLES[kind]}


def at_opset(model: ModelProto, opset: int) -> ModelProto:
    """``model`` at ``opset`` (the exporter writes 21; 2-bit containers need 25) with a matching IR version."""
    if opset != MIN_OPSET:
        model = version_converter.convert_version(model, opset)
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    return model


def strip_trace_info(model: ModelProto) -> None:
    """Drop what the exporter records for debugging (stack traces with the exporting machine's paths,
    FX node names, module scopes, traced shapes): most of a small model's bytes, nothing a runtime needs."""
    graph = model.graph
    del graph.value_info[:]  # the traced shapes of intermediate tensors: onnxruntime infers them at load
    for item in (model, graph, *graph.node, *graph.input, *graph.output, *graph.initializer):
        del item.metadata_props[:]
        item.doc_string = ""


def _fixed_width_size(model: ModelProto, layouts: dict[str, dict], codes: dict) -> int:
    """The paper's size formula at the stored width: fp32 for every float initializer that is not part of a
    quantized tensor, container bits per quantized element, 4 bytes per per-group number."""
    quantized_parts = tuple(f"{name}::" for name in layouts)
    fp = sum(4 * math.prod(t.dims) for t in model.graph.initializer
             if t.data_type == onnx.TensorProto.FLOAT and not t.name.startswith(quantized_parts))
    bits = {c.name: c.bits for c in CONTAINERS}
    q = sum(bits[info["container"]] * codes[name].indices.numel() / 8 + 4 * layout_of(codes[name].layout)
            .scalars_per_group * codes[name].n_groups for name, info in layouts.items())
    return round(fp + q)


def export_onnx(artefact: str | Path, out: str | Path, *, weights: str = "quantized", opset: int | None = None) -> dict:
    """Write the artefact's model as ONNX to ``out`` (see the module docstring) and describe what was written.

    ``opset``: None takes the lowest that gives every tensor its smallest container (21; 25 where a
    tensor has at most 4 levels, for ``uint2``); 21 forces 2-bit indices into ``uint4``.

    Returns ``{"files": {role: path}, "kind", "weights", "opset", "ir_version", "tensors": {name: layout
    description}, "size_onnx", "size_fixed_width", "size_qda", "size_analytic", "size_fp32"}``
    (sizes in bytes; ``tensors`` is empty for ``weights="fp32"``).
    """
    if weights not in WEIGHTS:
        raise OnnxExportError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    artefact = Path(artefact)
    model, codes, header = model_from_artefact(artefact)
    if opset is None:  # fp32 weights need no integer container
        opset = required_opset(codes) if weights == "quantized" else MIN_OPSET
    if opset < MIN_OPSET:
        raise OnnxExportError(f"opset {opset} is too old: blocked DequantizeLinear and 4-bit types need opset "
                              f"{MIN_OPSET} or later")
    kind = header.get("kind", DEFAULT_KIND)
    files = onnx_files(out, kind)
    graphs, layouts, fixed = {}, {}, 0
    for role, graph in task_graphs(model, header).items():
        graph = at_opset(graph, opset)
        strip_trace_info(graph)
        mine = quantize_initializers(graph, codes, opset) if weights == "quantized" else {}
        layouts.update(mine)
        fixed += _fixed_width_size(graph, mine, codes)
        onnx.checker.check_model(graph, full_check=True)
        graphs[role] = graph.SerializeToString()
    if weights == "quantized" and layouts.keys() != codes.keys():
        missing = sorted(codes.keys() - layouts.keys())
        raise OnnxExportError(f"{artefact}: quantized tensors {missing[:5]} are not initializers of the exported "
                              "graphs (the exporter renamed or folded them), so their integers cannot be stored")
    for role, data in graphs.items():  # written only once every graph is complete and checked
        atomic_write_bytes(data, files[role])
    sizes = model_sizes(dict(model.named_parameters()), codes)
    return {"files": {r: str(p) for r, p in files.items()}, "kind": kind, "weights": weights, "opset": opset,
            "ir_version": graph.ir_version, "tensors": layouts,
            "size_onnx": sum(map(len, graphs.values())), "size_fixed_width": fixed,
            "size_qda": artefact.stat().st_size,
            "size_analytic": sizes["size_analytic"] if codes else sizes["size_fp32"], "size_fp32": sizes["size_fp32"]}


if __name__ == "__main__":
    import json

    print(json.dumps(export_onnx(sys.argv[1], sys.argv[2]), indent=1))
