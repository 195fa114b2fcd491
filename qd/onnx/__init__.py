"""ONNX export of the compressed model: the quantized weights stored as low-bit integers with their
scales, run by onnxruntime (``docs/onnx.md``).

* ``export_onnx(artefact, out, weights="quantized", opset=None) -> dict``: write the ``.qda`` model as
  ONNX (one file for a classifier, an encoder and a decoder-step file for a translation model) and
  describe it (files, opset, each tensor's layout, sizes); ``onnx_files(out, kind)`` names the files;
* ``onnx_agreement(artefact, files, data, split="test") -> dict``: the fraction of test examples on
  which the ONNX model predicts what the artefact's PyTorch model predicts;
* ``onnx_latency(artefact, files, threads=1) -> dict``: batch-1 median latency, onnxruntime vs PyTorch;
* ``integer_onnx(artefact, out, calibration) -> dict``: the integer path (onnxruntime's static
  quantization, ``QLinearConv``/``QLinearMatMul``), for 8-bit per-channel classifiers
  (``per_channel_8bit(codes)``).

Needs the ``onnx`` extra (``pip install -e '.[onnx]'``); importing this package without it raises
:class:`OnnxExportError` with that command. Exercise it with ``pytest tests/test_onnx.py``.
"""
from __future__ import annotations

from qd.onnx.errors import OnnxExportError, require_onnx

require_onnx()

from qd.onnx.export import export_onnx, onnx_files  # noqa: E402
from qd.onnx.integer import integer_onnx, per_channel_8bit  # noqa: E402
from qd.onnx.measure import onnx_agreement, onnx_latency, ort_session  # noqa: E402

__all__ = ["OnnxExportError", "export_onnx", "integer_onnx", "onnx_agreement", "onnx_files", "onnx_latency",
           "ort_session", "per_channel_8bit"]
