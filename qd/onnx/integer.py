"""The integer path of a classifier: onnxruntime's integer kernels on 8-bit weights and activations.

:func:`integer_onnx`: onnxruntime's static quantization
(``onnxruntime.quantization.quantize_static``, QOperator format: ``QLinearConv``, ``QGemm``,
``QLinearMatMul``) of the fp32 graph of the artefact's decoded weights, per output channel, with
uint8 activations calibrated (min-max) on example inputs. Weights the artefact holds as 8-bit
per-channel ``affine`` codes keep exactly those codes: their scales and zero points are handed to the
quantizer (``TensorQuantOverrides``), and rounding ``w / scale`` of a decoded weight gives back its
level (the relative error of the two fp32 roundings is far below half a level); every other weight is
quantized by onnxruntime (int8, symmetric per channel). The activations are quantized too, so the
integer path is a further approximation of the model: its agreement is measured like any file's.

Exercise it with ``pytest tests/test_onnx.py -k integer``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from qd.onnx.errors import OnnxExportError
from qd.onnx.export import export_onnx
from qd.quantizers.layouts import AFFINE, STEP, QuantCodes
from qd.run import model_from_artefact
from qd.tasks import DEFAULT_KIND

INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd")


def per_channel(c: QuantCodes) -> bool:
    """Integer levels with a scale per slice along an axis, or per output channel (buckets of one row)."""
    rows = c.shape[0] if c.shape else 0
    by_row = len(c.shape) >= 2 and rows > 0 and c.bucket_size is not None and c.bucket_size * rows == c.indices.numel()
    return c.layout in (AFFINE, STEP) and (c.axis is not None or by_row)


def per_channel_8bit(codes: dict[str, QuantCodes]) -> bool:
    """Whether every quantized weight matrix or kernel has 256 levels per channel: the models the integer
    path is meant for. Vectors (biases, BatchNorm parameters) may be coded in any layout: the integer graph
    takes their decoded values (a bias becomes int32 at the scale of its layer's product)."""
    weights = [c for c in codes.values() if len(c.shape) >= 2]
    return bool(weights) and all(per_channel(c) and c.n_levels == 256 for c in weights)


def _uint8_per_output_channel(c: QuantCodes) -> bool:
    """Codes onnxruntime's quantizer can take as they are: ``affine`` levels 0..255, fp32 scales, a scale
    and zero point per output channel (axis 0)."""
    return (per_channel(c) and c.n_levels == 256 and c.layout == AFFINE and c.quant_min == 0
            and c.axis in (None, 0) and c.scale.dtype == torch.float32)


def _kept_codes(codes: dict, uint8) -> dict:
    """onnxruntime's per-channel quantization overrides that reproduce the artefact's 8-bit codes."""
    overrides = {}
    for name, c in codes.items():
        if _uint8_per_output_channel(c):
            overrides[name] = [{"axis": 0, "quant_type": uint8, "scale": np.float32(s), "zero_point": np.uint8(z)}
                               for s, z in zip(c.scale.tolist(), c.zero_point.tolist())]
    return overrides


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantization tools log advice and skipped int64 shape tensors on the root logger."""
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(level)


def integer_onnx(artefact: str | Path, out: str | Path, calibration: torch.Tensor, *, batch_size: int = 64) -> dict:
    """The integer path of a classifier (see the module docstring), written to ``out``.

    ``calibration``: model inputs (normalised images) whose activation ranges set the activations' scales.
    Returns ``{"files": {"model": out}, "size_onnx", "kept_codes": [names of the weights stored with the
    artefact's own 8-bit codes], "integer_ops": {op: count}, "other_ops": {op: count}}``.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self, x: np.ndarray):
            self.feeds = iter([{"input": x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

        def get_next(self):
            return next(self.feeds, None)

    _, codes, header = model_from_artefact(artefact)
    if header.get("kind", DEFAULT_KIND) != "classification":
        raise OnnxExportError("the integer path is built for classifiers; onnxruntime's static quantization of "
                              "the step-by-step LSTM decoder is not part of it")
    kept = _kept_codes(codes, QuantType.QUInt8)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        fp32, prepared, quantized = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "prepared", "int8"))
        export_onnx(artefact, fp32, weights="fp32")
        with _quiet_root_logger():
            # onnxruntime's recommended pre-processing (its graph optimiser, ONNX shape inference); the
            # symbolic shape pass does not read the exporter's Constant nodes and is not needed here
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(quantized), Batches(np.asarray(calibration, np.float32)),
                            quant_format=QuantFormat.QOperator, per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"TensorQuantOverrides": kept})
        os.replace(quantized, out)  # same folder: the finished file appears at once
    ops = Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    return {"files": {"model": str(out)}, "size_onnx": out.stat().st_size, "kept_codes": sorted(kept),
            "integer_ops": {k: v for k, v in ops.items() if k in INTEGER_OPS},
            "other_ops": {k: v for k, v in ops.items() if k not in INTEGER_OPS}}
