"""The exported model against PyTorch's: agreement of predictions and latency.

* :func:`onnx_agreement`: the fraction of test examples whose prediction by the ONNX model equals the
  prediction of the PyTorch model loaded from the same ``.qda`` (the quantized weights, as evaluated):
  the argmax class for a classifier, the whole greedy output sentence for a translation model
  (``qd.onnx.decode``: the same search on both sides).
* :func:`onnx_latency`: median milliseconds of one batch-1 inference in onnxruntime and in PyTorch, on
  the same number of threads (onnxruntime: ``intra_op_num_threads``, one inter-op thread, sequential
  execution; PyTorch: ``torch.set_num_threads``), both timed by ``qd.latency.measure_latency`` (warm-up,
  repeats, median, IQR). A translation model's inference is the greedy translation of one sentence.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

from qd.onnx.decode import MAX_LEN, onnx_greedy, torch_greedy
from qd.onnx.errors import OnnxExportError
from qd.onnx.export import onnx_files
from qd.latency import measure_latency
from qd.run import model_from_artefact, task_of
from qd.tasks import DEFAULT_KIND
from qd.text.prepare import PreparedText


def ort_session(path: str | Path, threads: int = 1, fold_dequantize: bool = False) -> ort.InferenceSession:
    """A CPU session on ``threads`` intra-op threads and one inter-op thread, run sequentially.

    onnxruntime leaves ``DequantizeLinear`` nodes unfolded (so that its QDQ fusions can see them): the
    weights are then dequantized at every run. ``fold_dequantize`` folds them once at load
    (``session.disable_quant_qdq``), which is what a deployment that only wants the small file would do.
    """
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if fold_dequantize:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _files(files, kind: str) -> dict[str, Path]:
    """Role -> path from an :func:`export_onnx` result, a role mapping, or the ``out`` path given to it."""
    if isinstance(files, dict):
        files = files.get("files", files)
        return {role: Path(p) for role, p in files.items()}
    return onnx_files(files, kind)


# ---------------------------------------------------------------------------------------------------
# agreement


def onnx_agreement(artefact: str | Path, files, data: str | Path, *, split: str = "test", limit: int | None = None,
                   batch_size: int = 256, max_len: int = MAX_LEN, threads: int = 1,
                   fold_dequantize: bool = True) -> dict:
    """How often the ONNX model predicts what the artefact's PyTorch model predicts, on the test examples
    of the task's prepared ``data`` folder (the first ``limit`` when given): a classifier's prepared test
    split (``Task.test_examples``), a translation model's ``split`` sources.

    Returns ``{"kind", "compared", "n", "agree", "agreement", "disagreeing"}`` (``disagreeing``: the
    first 20 example indices that differ), plus ``max_abs_logit_diff`` for a classifier, and for a
    translation model ``unended`` (sentences whose PyTorch translation reached ``max_len`` words without
    ``</s>``) and ``agreement_ended`` (the agreement on the others).
    """
    model, _, header = model_from_artefact(artefact)
    kind = header.get("kind", DEFAULT_KIND)
    # folding the weights' DequantizeLinear once at load computes the same weights from the same file; it
    # only spares a translation's decoder step from dequantizing every weight at every word (about 20x)
    sessions = {role: ort_session(p, threads, fold_dequantize) for role, p in _files(files, kind).items()}
    if kind == "classification":
        examples = task_of(header).test_examples(Path(data))
        if examples is None:
            raise OnnxExportError(f"{data} holds no prepared test split for the classifier of {artefact}")
        inputs = examples[0][:limit]
        return _classification_agreement(model, sessions["model"], inputs, batch_size)
    if kind == "translation":
        sources = PreparedText.read(data).tokens[split][0][:limit]
        return _translation_agreement(model, sessions, sources, max_len)
    raise OnnxExportError(f"no ONNX agreement for the task kind {kind!r}")


def _summary(kind: str, compared: str, same: np.ndarray) -> dict:
    n = int(same.size)
    return {"kind": kind, "compared": compared, "n": n, "agree": int(same.sum()),
            "agreement": float(same.mean()) if n else float("nan"),
            "disagreeing": np.flatnonzero(~same)[:20].tolist()}


@torch.inference_mode()
def _classification_agreement(model: nn.Module, session, inputs: torch.Tensor, batch_size: int) -> dict:
    same, worst = [], 0.0
    for i in range(0, len(inputs), batch_size):
        x = inputs[i:i + batch_size].float()
        expected = model(x).numpy()
        got = session.run(["logits"], {"input": x.numpy()})[0]
        same.append(expected.argmax(1) == got.argmax(1))
        worst = max(worst, float(np.abs(expected - got).max()))
    row = _summary("classification", "argmax class", np.concatenate(same) if same else np.zeros(0, bool))
    return {**row, "max_abs_logit_diff": worst}


def _translation_agreement(model: nn.Module, sessions: dict, sources: list[torch.Tensor], max_len: int) -> dict:
    d = model.decoder.dictionary
    expected = [torch_greedy(model, src, max_len) for src in sources]
    got = [onnx_greedy(sessions["encoder"], sessions["decoder"], src.numpy(), d.eos(), d.pad(), max_len)
           for src in sources]
    same = np.array([a == b for a, b in zip(expected, got)], dtype=bool)
    # a sentence PyTorch never ends runs max_len recurrent steps: a model that loops that long (a degenerate
    # low-bit one) can amplify the last-bit differences of two runtimes' kernels until a word flips
    ended = np.array([len(a) < max_len for a in expected], dtype=bool)
    return {**_summary("translation", "greedy token sequence", same), "unended": int((~ended).sum()),
            "agreement_ended": float(same[ended].mean()) if ended.any() else float("nan")}


# ---------------------------------------------------------------------------------------------------
# latency


class OrtModule(nn.Module):
    """An onnxruntime session as a module, so that ``qd.latency.measure_latency`` times it as it times
    PyTorch (inputs are CPU tensors, passed to onnxruntime as numpy views without a copy)."""

    def __init__(self, session: ort.InferenceSession):
        super().__init__()
        self.session = session
        self.names = [i.name for i in session.get_inputs()]

    def forward(self, *inputs: torch.Tensor):
        return self.session.run(None, {n: x.numpy() for n, x in zip(self.names, inputs)})


class _GreedyTorch(nn.Module):
    def __init__(self, model: nn.Module, max_len: int):
        super().__init__()
        self.model, self.max_len = model, max_len

    def forward(self, src: torch.Tensor):
        return torch_greedy(self.model, src, self.max_len)


class _GreedyOnnx(nn.Module):
    def __init__(self, sessions: dict, eos: int, pad: int, max_len: int):
        super().__init__()
        self.sessions, self.eos, self.pad, self.max_len = sessions, eos, pad, max_len

    def forward(self, src: torch.Tensor):
        return onnx_greedy(self.sessions["encoder"], self.sessions["decoder"], src.numpy(), self.eos, self.pad,
                           self.max_len)


def example_input(header: dict, seed: int = 0) -> torch.Tensor:
    """A batch-1 input for latency: a normal image of the model's shape, or a 12-word sentence."""
    g = torch.Generator().manual_seed(seed)
    meta = header.get("model_meta", header.get("shape"))
    if header.get("kind", DEFAULT_KIND) == "translation":
        first = max(meta[k] for k in ("pad", "eos", "bos", "unk")) + 1  # ordinary words only
        words = torch.randint(first, meta["src_vocab"], (12,), generator=g)
        return torch.cat([words, torch.tensor([meta["eos"]])])
    return torch.randn(1, meta["in_channels"], meta["image_size"], meta["image_size"], generator=g)


def onnx_latency(artefact: str | Path, files, *, threads: int = 1, warmup: int = 10, repeats: int = 50,
                 example: torch.Tensor | None = None, fold_dequantize: bool = False,
                 max_len: int = MAX_LEN) -> dict:
    """Median ms of one batch-1 inference of the ONNX model(s) and of the artefact's PyTorch model.

    Returns ``{"batch": 1, "threads", "torch_ms", "onnx_ms", "onnx_over_torch", "torch_iqr_ms",
    "onnx_iqr_ms", "inference"}``; ``inference`` says what one inference is (a translation: the greedy
    translation of ``example``, a 12-word sentence by default, ``output_words`` long).
    """
    model, _, header = model_from_artefact(artefact)
    kind = header.get("kind", DEFAULT_KIND)
    sessions = {role: ort_session(p, threads, fold_dequantize) for role, p in _files(files, kind).items()}
    x = example_input(header) if example is None else example
    if kind == "translation":
        d = model.decoder.dictionary
        ours, theirs = _GreedyOnnx(sessions, d.eos(), d.pad(), max_len), _GreedyTorch(model, max_len)
        inference = {"inference": "greedy translation of one sentence", "output_words": len(theirs(x))}
    else:
        ours, theirs = OrtModule(sessions["model"]), model
        inference = {"inference": "one image"}
    timing = {"warmup": warmup, "repeats": repeats, "threads": threads}
    on_torch, on_onnx = measure_latency(theirs, (x,), **timing), measure_latency(ours, (x,), **timing)
    return {"batch": 1, "threads": threads, **inference, "torch_ms": on_torch["median_ms"],
            "onnx_ms": on_onnx["median_ms"], "onnx_over_torch": on_onnx["median_ms"] / on_torch["median_ms"],
            "torch_iqr_ms": on_torch["iqr_ms"], "onnx_iqr_ms": on_onnx["iqr_ms"]}
