"""One run, end to end: build the context, call the method, evaluate the quantized result, write the row.

A run folder ends up holding ``model.qda`` (the compressed artefact of the final weights: Huffman-coded
level indices for a quantized method; every later stage loads the model from it), ``history.csv`` (one
row per epoch), the task's per-example test outputs (``test_outputs.csv`` or ``test_hypotheses.txt``),
``spec.json`` (what the run was asked to do) and ``metrics.json`` (the result row).
The rolling checkpoint ``checkpoint.pt`` lives beside them while the run trains and is removed once
the outputs are written; the outputs are written last, each atomically, ``metrics.json`` last of all.

Everything task-specific goes through the run's task adapter (``ctx.task``, ``qd.tasks``); a method
builds its loss with :meth:`RunContext.objective` and never sees what a batch holds.

Try: ``qd train --config config/config.yaml --task digits --model student1 --method qd --bits 4``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from qd import distributed
from qd.artefact import export_artefact, load_artefact
from qd.config import spec_hash
from qd.errors import MissingRun
from qd.io import atomic_write_json, atomic_write_text
from qd.methods import load_method
from qd.models import count_parameters
from qd.policy import QuantPolicy, quantized_names
from qd.provenance import environment
from qd.quant import QuantCodes, decode
from qd.size import model_sizes
from qd.ste import UniformQuantizer
from qd.tasks import load_task
from qd.train import Fit, Selection, run_epochs

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
    """Everything a method may use. Methods build models and losses from it, never from globals.

    ``task`` is the run's task adapter (data, models, losses, metrics); ``teacher`` and ``source``
    are the finished runs the method reads (in eval mode), when its registry entry asks for them.
    """

    spec: dict
    task: object  # a qd.tasks.base.Task
    device: torch.device
    run_dir: Path
    teacher: nn.Module | None = None
    source: nn.Module | None = None
    teacher_file: Path | None = None  # the teacher's artefact, hashed into the row's teacher_id
    source_file: Path | None = None

    # ---- models
    def new_model(self) -> nn.Module:
        """A freshly initialised student, seeded by the run's seed (rank 0's on every process)."""
        torch.manual_seed(self.spec["seed"])
        model = self.task.new_model(self.spec["model"])
        distributed.broadcast_module(model)
        return model

    def source_copy(self) -> nn.Module:
        if self.source is None:
            raise RuntimeError(f"method {self.spec['method']['name']!r} needs a source student but none was given")
        return copy.deepcopy(self.source)

    def compiled(self, model: nn.Module):
        """``model`` itself, or ``torch.compile(model)`` when the recipe asks (``train.compile``); the
        compiled module shares the model's parameters, so training it trains the model."""
        if self.spec.get("train", {}).get("compile"):
            return torch.compile(model)
        return model

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
    def objective(self, forward: Callable, teacher: nn.Module | None = None) -> Callable:
        """The loss of one batch through ``forward``: the task's own loss, or with ``teacher`` the
        distillation loss toward that teacher's outputs (the run's ``distill`` block)."""
        task = self.task

        def task_loss(batch):
            return task.loss(forward(*task.inputs(batch)), batch)

        def distillation(batch):
            target = task.teacher_output(teacher, batch)
            return task.distillation_loss(forward(*task.inputs(batch)), target, batch, self.spec["distill"])

        return task_loss if teacher is None else distillation

    # ---- training and evaluation
    def evaluator(self, forward: Callable) -> Callable[[], dict]:
        """Per-epoch evaluation of ``forward`` (which must use the weights being reported): the task's
        epoch metrics on val and test, as ``<split>_<metric>``."""

        def evaluate() -> dict:
            out = {}
            for split in ("val", "test"):
                out.update({f"{split}_{k}": v for k, v in self.task.epoch_metrics(forward, split).items()})
            return out

        return evaluate

    def fit(self, fit: Fit) -> list[dict]:
        """Train with the run's recipe (``train`` block), checkpointing into the run folder."""
        t = self.spec["train"]
        info = self.task.info
        select = Selection(f"{t.get('select_on', 'test')}_{info.epoch_metric}", info.epoch_higher_is_better,
                           shadow=t.get("schedule_reads") == "full_precision")
        return run_epochs(fit, self.task, t, self.spec["seed"], self.spec["run"], self.run_dir / CHECKPOINT,
                          spec_hash(self.spec), select)


def load_codes(model: nn.Module, codes: dict[str, QuantCodes]) -> None:
    """Replace the named parameters' values by their decoded quantized tensors."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, c in codes.items():
            params[name].copy_(decode(c).to(params[name].device))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _meta_of(header: dict) -> tuple[str, dict]:
    """Task kind and model metadata of an artefact header (format 1 files called the latter 'shape')."""
    return header.get("kind", "classification"), header.get("model_meta", header.get("shape"))


def model_from_artefact(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, dict]:
    """``(model, codes, header)`` from a compressed artefact: the model holds exactly the saved weights."""
    state_dict, codes, header = load_artefact(path)
    kind, meta = _meta_of(header)
    model = load_task(kind).build_model(header["model"], meta)
    model.load_state_dict(state_dict)
    return model.to(device).eval(), codes, header


def load_run_model(run_dir: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The final model of a finished run folder, in eval mode."""
    path = Path(run_dir) / ARTEFACT
    if not path.exists():
        raise MissingRun(f"{path} does not exist: the run {run_dir} has not finished")
    return model_from_artefact(path, device)[0]


def execute(spec: dict, out_dir: str | Path, data: str | Path, teacher_dir=None, source_dir=None) -> dict:
    """Run ``spec`` into ``out_dir`` and return its result row. ``data`` is the task's prepared data
    folder (or a file in it)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(spec["threads"])
    env = distributed.torchrun_env()  # under torchrun: one process per GPU (or CPU share) of the job
    device = distributed.init_process_group(env, spec["device"]) if env.distributed else resolve_device(spec["device"])
    try:
        return _execute(spec, out_dir, Path(data), device, teacher_dir, source_dir)
    finally:
        distributed.destroy_process_group()


def _execute(spec: dict, out_dir: Path, data: Path, device: torch.device, teacher_dir, source_dir) -> dict | None:
    started = time.perf_counter()
    folder = data if data.is_dir() else data.parent
    task = load_task(spec["kind"])(spec, folder, device)
    ctx = RunContext(spec, task, device, out_dir)
    if spec.get("teacher"):
        teacher_dir = _required(teacher_dir, "teacher", spec)
        ctx.teacher = load_run_model(teacher_dir, device)
        ctx.teacher_file = teacher_dir / ARTEFACT
        task.use_teacher_run(teacher_dir)  # adapters that compare with the teacher's outputs read them there
    if spec.get("source"):
        source_dir = _required(source_dir, "source", spec)
        ctx.source = load_run_model(source_dir, device)
        ctx.source_file = source_dir / ARTEFACT
    if distributed.is_writer():
        atomic_write_json(spec, out_dir / "spec.json")
    result: RunResult = load_method(spec["method"]["entry"])(ctx)
    result.model.eval()
    if not distributed.is_writer():
        distributed.barrier()  # rank 0 evaluates the final model and writes the outputs
        return None
    size_on_disk = write_artefact(out_dir / ARTEFACT, ctx, result)
    metrics, outputs = task.final_metrics(result.model)
    row = result_row(ctx, result, metrics, size_on_disk, time.perf_counter() - started)
    write_outputs(out_dir, result, outputs, row)
    distributed.barrier()
    return row


def _required(path, role: str, spec: dict) -> Path:
    if path is None:
        raise ValueError(f"run {spec['run']}: method {spec['method']['name']!r} needs --{role} (a finished run folder)")
    return Path(path)


def artefact_header(ctx: RunContext) -> dict:
    """What rebuilds the model, and which run it is (the full spec stays in spec.json: a few kB of
    JSON would outweigh a small quantized model)."""
    spec = ctx.spec
    return {"kind": spec["kind"], "model": spec["model"], "model_meta": ctx.task.model_meta(), "run": spec["run"],
            "task": spec["task"], "method": spec["method"]["name"], "bits": spec["method"]["bits"],
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


def result_row(ctx: RunContext, result: RunResult, metrics: dict, size_on_disk: int, wall_time: float) -> dict:
    spec, model = ctx.spec, result.model
    sizes = model_sizes(dict(model.named_parameters()), result.codes)
    quantized = bool(result.codes)
    distilled = "distill" in spec
    info = run_method_info(spec)
    row = {
        "preset": spec["preset"], "run": spec["run"], "role": spec["role"], "task": spec["task"],
        "kind": spec["kind"], "dataset": spec["dataset"], "model": spec["model"]["name"],
        "params": count_parameters(model), "method": spec["method"]["name"],
        "bits": spec["method"]["bits"], "bucket": spec["method"]["bucket_size"],
        "policy": ctx.policy().describe() if quantized else None,
        "seed": spec["seed"],
        "primary_metric": ctx.task.info.primary,
        "method_label": info.label,
        "uniform_grid": info.uniform_grid if quantized else None,
        **metrics,
        **{k: sizes[k] for k in ("quantized_params", "fp_params", "n_buckets", "size_fp32")},
        "size_analytic": sizes["size_analytic"] if quantized else sizes["size_fp32"],
        "size_on_disk": size_on_disk,
        "huffman_bits_per_weight": sizes["huffman_bits_per_weight"] if quantized else None,
        "entropy_bits_per_weight": sizes["entropy_bits_per_weight"] if quantized else None,
        "epochs": len(result.history),
        "reporting_rule": REPORTING_RULE,
        "temperature": spec["distill"]["temperature"] if distilled else None,
        "distill_reduction": spec["distill"]["reduction"] if distilled else None,
        "teacher_id": file_id(ctx.teacher_file) if ctx.teacher_file else None,
        "source_id": file_id(ctx.source_file) if ctx.source_file else None,
        "config_hash": spec_hash(spec),
        **environment(ctx.device),
        "wall_time": wall_time,
        **result.extra,
    }
    return row


def run_method_info(spec: dict):
    """The registry entry of a run's method (built-in, or what its module declares)."""
    from qd.methods.registry import BUILTIN, method_info

    m = spec["method"]
    if m["name"] in BUILTIN and BUILTIN[m["name"]].entry == m["entry"]:
        return method_info(m["name"], m["options"])
    return method_info(m["name"], {"entry": m["entry"], **m["options"]})


def file_id(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for row in history for k in row)) or ["epoch"]
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def write_outputs(out_dir: Path, result: RunResult, outputs: dict[str, str], row: dict) -> None:
    """Write the remaining declared outputs (metrics.json last) and drop the rolling checkpoint."""
    atomic_write_text(history_csv(result.history), out_dir / "history.csv")
    for name, text in outputs.items():
        atomic_write_text(text, out_dir / name)
    atomic_write_json(row, out_dir / "metrics.json")
    (out_dir / CHECKPOINT).unlink(missing_ok=True)


def read_spec(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
