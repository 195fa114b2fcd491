"""The ONNX export's expected failures, and the check that its optional dependencies are installed."""
from __future__ import annotations

from qd.errors import QdError


class OnnxExportError(QdError, ValueError):
    """A model, artefact or option the ONNX export cannot handle; the message says which and why."""


def require_onnx() -> None:
    """Fail with the install command when the ``onnx`` extra (onnx, onnxruntime, onnxscript) is missing."""
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OnnxExportError(f"ONNX export needs {', '.join(missing)}: install the extra with "
                              "pip install -e '.[onnx]'")
