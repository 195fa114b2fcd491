"""A finished run's model as ONNX, checked against PyTorch: what the workflow's ``onnx`` rule runs.

``qd onnx --run RUN`` (:func:`onnx_run`) writes, in the run folder:

* ``model.onnx`` (a translation model: ``model.encoder.onnx`` and ``model.decoder.onnx``): the
  compressed model with its weights stored as low-bit integers (:func:`qd.onnx.export_onnx`);
* ``model.int8.onnx`` where the run's weights are 8-bit per channel: the integer path
  (:func:`qd.onnx.integer_onnx`, activations calibrated on the first ``calibration`` training images);
* ``onnx.json``: the files, their sizes beside the ``.qda`` file's and the paper's analytic size, and
  the share of test examples on which each ONNX model predicts what PyTorch's quantized model predicts.

Timing is not done here: the workflow's ``latency`` job times every run alone with every core reserved
(:func:`onnx_latency_columns`), so that no timing shares the machine with training.

Try: ``qd onnx --run results/demo/digits/student1/qd/b4-d256/seed0``.
"""
from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import torch

from qd.io import atomic_write_text
from qd.onnx.errors import OnnxExportError
from qd.onnx.export import export_onnx
from qd.onnx.integer import integer_onnx, per_channel_8bit
from qd.onnx.measure import onnx_agreement, onnx_latency
from qd.report.collect import ONNX_RECORD as RECORD
from qd.run import ARTEFACT, model_from_artefact

EXPORT = "model.onnx"
INTEGER = "model.int8.onnx"


def stack_name(integer: bool) -> str:
    """The inference stack a row's ONNX latency and claim 5 ran on, in words."""
    what = ("integer path: QLinearConv/QGemm, uint8 activations and the run's 8-bit codes" if integer
            else "low-bit weights dequantized to fp32 in the graph (DequantizeLinear), fp32 arithmetic")
    return f"onnxruntime {ort.__version__} CPU, {what}"


def calibration_images(data: Path, n: int) -> torch.Tensor:
    """The first ``n`` training images (normalised): the activation ranges of the integer path come
    from training data, never from the test set it is scored on."""
    from qd.data import load_splits
    from qd.tasks.classification import SPLIT_FILE

    path = Path(data) / SPLIT_FILE
    if not path.exists():
        raise OnnxExportError(f"{path} does not exist: the integer path calibrates its activations on the "
                              "prepared training images (a streamed image folder has none to read)")
    return load_splits(path).train[0][:n]


def onnx_run(run: Path, data: Path, threads: int = 1, calibration: int = 512) -> dict:
    """Export the run's model, check it on the test set, and write ``onnx.json`` (returned)."""
    run, data = Path(run), Path(data)
    artefact = run / ARTEFACT
    torch.set_num_threads(threads)
    _, codes, header = model_from_artefact(artefact)
    exported = export_onnx(artefact, run / EXPORT)
    record = {"run": header.get("run", run.as_posix()), "kind": exported["kind"], "opset": exported["opset"],
              "files": {role: Path(p).name for role, p in exported["files"].items()},
              **{k: exported[k] for k in ("size_onnx", "size_fixed_width", "size_qda", "size_analytic", "size_fp32")},
              "agreement": _agreement(artefact, exported, data, threads)}
    if exported["kind"] == "classification" and per_channel_8bit(codes):
        integer = integer_onnx(artefact, run / INTEGER, calibration_images(data, calibration))
        record["integer"] = {"file": INTEGER, "size_onnx": integer["size_onnx"],
                             "kept_codes": len(integer["kept_codes"]), "integer_ops": integer["integer_ops"],
                             "other_ops": integer["other_ops"],
                             "agreement": _agreement(artefact, integer, data, threads)}
    atomic_write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", run / RECORD)
    return record


def _agreement(artefact: Path, files: dict, data: Path, threads: int) -> dict:
    """``onnx_agreement``'s figures, without its per-kind extras that are absent."""
    a = onnx_agreement(artefact, files, data, threads=threads)
    keys = ("compared", "n", "agree", "agreement", "disagreeing", "max_abs_logit_diff", "unended", "agreement_ended")
    return {k: a[k] for k in keys if k in a}


def onnx_latency_of(run: Path, latency: dict) -> dict:
    """:func:`onnx_latency_columns` with the ``evaluation.latency`` settings (``qd latency``'s extra columns)."""
    return onnx_latency_columns(run, latency["threads"], latency["warmup"], latency["repeats"])


def onnx_latency_columns(run: Path, threads: int, warmup: int, repeats: int) -> dict:
    """The latency job's ONNX columns of one run (empty when the run has no ``onnx.json``): batch-1
    medians of PyTorch's model and of the ONNX model(s) on onnxruntime, timed side by side."""
    path = Path(run) / RECORD
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    artefact, timing = Path(run) / ARTEFACT, {"threads": threads, "warmup": warmup, "repeats": repeats}
    files = {role: Path(run) / name for role, name in record["files"].items()}
    lat = onnx_latency(artefact, files, **timing)
    cols = {"onnx_inference": lat["inference"], "onnx_batch": lat["batch"], "onnx_torch_ms": lat["torch_ms"],
            "onnx_ms": lat["onnx_ms"], "onnx_over_torch": lat["onnx_over_torch"], "onnx_stack": stack_name(False)}
    if "integer" in record:
        integer = onnx_latency(artefact, {"model": Path(run) / record["integer"]["file"]}, **timing)
        cols.update(onnx_integer_ms=integer["onnx_ms"], onnx_integer_over_torch=integer["onnx_ms"] / lat["torch_ms"],
                    onnx_integer_stack=stack_name(True))
    return cols



def integer_stack(run: Path, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, dict, str] | None:
    """The logits of ``x`` on the run's integer path (``model.int8.onnx``, onnxruntime), with its facts
    and the stack's name, for claim 5 (``qd.report.integer.check_integer_model``); None where the run has
    no integer path. onnxruntime accumulates in int32 (its QLinearConv contract), so the emulated path's
    accumulator bound is not measured here."""
    import numpy as np

    from qd.onnx.measure import ort_session

    path, record = Path(run) / INTEGER, Path(run) / RECORD
    if not path.exists() or not record.exists():
        return None
    ops = json.loads(record.read_text())["integer"]
    session = ort_session(path)
    logits = np.concatenate([session.run(["logits"], {"input": x[i:i + batch].float().numpy()})[0]
                             for i in range(0, len(x), batch)])
    facts = {"integer_layers": sum(ops["integer_ops"].values()), "float_layers": sum(ops["other_ops"].values()),
             "largest_accumulator": None, "fits_int32": True}
    return torch.from_numpy(logits), facts, stack_name(True)
