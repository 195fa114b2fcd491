"""One run, end to end: build the context, call the method, evaluate the quantized result, write the row.

A run folder ends up holding ``model.qda`` (the compressed artefact of the final weights: Huffman-coded
level indices for a quantized method; every later stage loads the model from it), ``history.csv`` (one
row per epoch), ``metrics.json`` (the result row) and the job's log.
The rolling checkpoint ``checkpoint.pt`` lives beside them while the run trains and is removed once
the outputs are written; the outputs are written last, each atomically.

Try: ``qd train --config config/config.yaml --task digits --model student1 --method qd --bits 4``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from qd.artefact import export_artefact, load_artefact
from qd.config import spec_hash
from qd.data import Splits, load_splits
from qd.distill import distillation_loss
from qd.errors import MissingRun
from qd.evaluate import classify
from qd.io import atomic_write_json, atomic_write_text
from qd.latency import measure_latency
from qd.methods import load_method
from qd.models import build_model, count_parameters
from qd.policy import QuantPolicy, quantized_names
from qd.provenance import environment
from qd.quant import QuantCodes, decode
from qd.size import model_sizes
from qd.ste import UniformQuantizer
from qd.train import Fit, run_epochs

REPORTING_RULE = "final epoch, quantized weights"
CHECKPOINT = "checkpoint.pt"
ARTEFACT = "model.qda"


@dataclass
class RunResult:
    """What a method returns: the final model (quantized weights in place) and their codes."""

    model: nn.Module
    codes: dict[str, QuantCodes] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a method may use. Methods build models and losses from it, never from globals."""

    spec: dict
    splits: Splits
    device: torch.device
    run_dir: Path
    teacher: nn.Module | None = None
    source: nn.Module | None = None
    teacher_file: Path | None = None  # the teacher's artefact, hashed into the row's teacher_id

    # ---- models
    def new_model(self) -> nn.Module:
        """A freshly initialised student, seeded by the run's seed."""
        torch.manual_seed(self.spec["seed"])
        return build_model(self.spec["model"], **_shape(self.splits)).to(self.device)

    def source_copy(self) -> nn.Module:
        if self.source is None:
            raise RuntimeError(f"method {self.spec['method']['name']!r} needs a source student but none was given")
        return copy.deepcopy(self.source)

    # ---- quantization
    @property
    def bits(self) -> int:
        return self.spec["method"]["bits"]

    @property
    def bucket_size(self) -> int | None:
        return self.spec["method"]["bucket_size"]

    def policy(self) -> QuantPolicy:
        q = self.spec["quant"]
        return QuantPolicy(q["policy"], q["keep_first_last"], q["biases"], q["norm"], q["embeddings"])

    def quantized_names(self, model: nn.Module) -> list[str]:
        return quantized_names(model, self.policy())

    def uniform_quantizer(self) -> UniformQuantizer:
        stochastic = self.spec["quant"]["rounding"] == "stochastic"
        generator = torch.Generator(device=self.device).manual_seed(self.spec["seed"]) if stochastic else None
        return UniformQuantizer(self.bits, self.bucket_size, stochastic, generator)

    # ---- losses
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.teacher(x)

    def distillation(self, student_logits, teacher_logits, y) -> torch.Tensor:
        d = self.spec["distill"]
        # the clone turns an inference-mode tensor into one autograd may use (as a constant)
        return distillation_loss(student_logits, teacher_logits.clone(), y, d["temperature"], d["weight"],
                                 d["reduction"])

    # ---- training and evaluation
    def evaluator(self, forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], dict]:
        """Per-epoch evaluation of ``forward`` (which must use the weights being reported)."""
        bs = self.spec["evaluation"]["batch_size"]

        def evaluate() -> dict:
            return {f"{s}_accuracy": classify(forward, *self.splits.split(s), bs)["accuracy"] for s in ("val", "test")}

        return evaluate

    def fit(self, fit: Fit) -> list[dict]:
        """Train with the run's recipe (``train`` block), checkpointing into the run folder."""
        return run_epochs(fit, self.splits, self.spec["train"], self.spec["seed"], self.spec["run"],
                          self.run_dir / CHECKPOINT)


def load_codes(model: nn.Module, codes: dict[str, QuantCodes]) -> None:
    """Replace the named parameters' values by their decoded quantized tensors."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, c in codes.items():
            params[name].copy_(decode(c).to(params[name].device))


def _shape(splits: Splits) -> dict:
    m = splits.meta
    return {"in_channels": m["in_channels"], "num_classes": m["num_classes"], "image_size": m["image_size"]}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_from_artefact(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, dict]:
    """``(model, codes, header)`` from a compressed artefact: the model holds exactly the saved weights."""
    state_dict, codes, header = load_artefact(path)
    model = build_model(header["model"], **header["shape"])
    model.load_state_dict(state_dict)
    return model.to(device).eval(), codes, header


def load_run_model(run_dir: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The final model of a finished run folder, in eval mode."""
    path = Path(run_dir) / ARTEFACT
    if not path.exists():
        raise MissingRun(f"{path} does not exist: the run {run_dir} has not finished")
    return model_from_artefact(path, device)[0]


def _splits_on(splits: Splits, device: torch.device) -> Splits:
    move = lambda t: tuple(v.to(device) for v in t)  # noqa: E731
    return Splits(move(splits.train), move(splits.val), move(splits.test), splits.meta)


def execute(spec: dict, out_dir: str | Path, data: str | Path, teacher_dir=None, source_dir=None) -> dict:
    """Run ``spec`` into ``out_dir`` and return its result row."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(spec["train"]["threads"])
    device = resolve_device(spec["train"]["device"])
    started = time.perf_counter()
    ctx = RunContext(spec, _splits_on(load_splits(data), device), device, out_dir)
    if spec["method"]["needs_teacher"]:
        teacher_dir = _required(teacher_dir, "teacher", spec)
        ctx.teacher = load_run_model(teacher_dir, device)
        ctx.teacher_file = teacher_dir / ARTEFACT
    if spec["method"]["source"]:
        ctx.source = load_run_model(_required(source_dir, "source", spec), device)
    result: RunResult = load_method(spec["method"]["entry"])(ctx)
    result.model.eval()
    size_on_disk = write_artefact(out_dir / ARTEFACT, ctx, result)
    row = result_row(ctx, result, size_on_disk, time.perf_counter() - started)
    write_outputs(out_dir, result, row)
    return row


def _required(path, role: str, spec: dict) -> Path:
    if path is None:
        raise ValueError(f"run {spec['run']}: method {spec['method']['name']!r} needs --{role} (a finished run folder)")
    return Path(path)


def artefact_header(ctx: RunContext) -> dict:
    """What rebuilds the model, and which run it is (the full spec stays in metrics.json: a few kB of
    JSON would outweigh a small quantized model)."""
    spec = ctx.spec
    return {"model": spec["model"], "shape": _shape(ctx.splits), "run": spec["run"], "task": spec["task"],
            "method": spec["method"]["name"], "bits": spec["method"]["bits"],
            "bucket_size": spec["method"]["bucket_size"]}


def write_artefact(path: Path, ctx: RunContext, result: RunResult) -> int:
    """Export the final weights and check that the file loads back to them bit for bit; its size."""
    state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
    size = export_artefact(path, state, result.codes, artefact_header(ctx))
    loaded, _, _ = load_artefact(path)
    if loaded.keys() != state.keys() or not all(torch.equal(loaded[k], state[k]) for k in state):
        path.unlink()
        raise RuntimeError(f"{path}: the artefact does not load back to the evaluated weights")
    return size


def latency(ctx: RunContext, model: nn.Module) -> dict:
    """Forward-pass latency of the final model on a batch of test images, on the run's device."""
    cfg = ctx.spec["evaluation"]["latency"]
    x = ctx.splits.test[0][: cfg["batch_size"]]
    m = measure_latency(model, x, warmup=cfg["warmup"], repeats=cfg["repeats"], threads=ctx.spec["train"]["threads"])
    return {"latency_device": m["device"], "latency_batch": m["batch"], "latency_threads": m["threads"],
            "latency_median_ms": m["median_ms"], "latency_iqr_ms": m["iqr_ms"], "latency_repeats": m["repeats"]}


def result_row(ctx: RunContext, result: RunResult, size_on_disk: int, wall_time: float) -> dict:
    spec, model = ctx.spec, result.model
    bs = spec["evaluation"]["batch_size"]
    test = classify(model, *ctx.splits.test, bs)
    val = classify(model, *ctx.splits.val, bs)
    sizes = model_sizes(dict(model.named_parameters()), result.codes)
    quantized = bool(result.codes)
    row = {
        "preset": spec["preset"], "run": spec["run"], "role": spec["role"], "task": spec["task"], "dataset": spec["dataset"]["name"],
        "model": spec["model"]["name"], "params": count_parameters(model), "method": spec["method"]["name"],
        "bits": spec["method"]["bits"], "bucket": spec["method"]["bucket_size"],
        "policy": ctx.policy().describe() if quantized else None,
        "seed": spec["seed"],
        "accuracy": test["accuracy"], "top5": test["top5"], "test_loss": test["loss"],
        "val_accuracy": val["accuracy"],
        **{k: sizes[k] for k in ("quantized_params", "fp_params", "n_buckets", "size_fp32")},
        "size_analytic": sizes["size_analytic"] if quantized else sizes["size_fp32"],
        "size_on_disk": size_on_disk,
        "huffman_bits_per_weight": sizes["huffman_bits_per_weight"] if quantized else None,
        "entropy_bits_per_weight": sizes["entropy_bits_per_weight"] if quantized else None,
        "epochs": len(result.history),
        "reporting_rule": REPORTING_RULE,
        "temperature": spec["distill"]["temperature"] if spec["method"]["needs_teacher"] else None,
        "distill_reduction": spec["distill"]["reduction"] if spec["method"]["needs_teacher"] else None,
        "teacher_id": file_id(ctx.teacher_file) if ctx.teacher_file else None,
        "config_hash": spec_hash(spec),
        **environment(ctx.device),
        **latency(ctx, model),
        "wall_time": wall_time,
        **result.extra,
    }
    return row


def file_id(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row)) or ["epoch"]
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def write_outputs(out_dir: Path, result: RunResult, row: dict) -> None:
    """Write the remaining declared outputs (metrics.json last) and drop the rolling checkpoint."""
    atomic_write_text(history_csv(result.history), out_dir / "history.csv")
    atomic_write_json(row, out_dir / "metrics.json")
    (out_dir / CHECKPOINT).unlink(missing_ok=True)
