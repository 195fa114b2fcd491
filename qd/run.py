"""One run, end to end: build the context, call the method, evaluate the quantized result, write the row.

A run folder ends up holding ``model.qda`` (the compressed artefact of the final weights: Huffman-coded
level indices for a quantized method; every later stage loads the model from it), ``history.csv`` (one
row per epoch), the task's per-example test outputs (``test_outputs.csv`` or ``test_hypotheses.txt``),
``spec.json`` (what the run was asked to do) and ``metrics.json`` (the result row).
The rolling checkpoint ``checkpoint.pt`` lives beside them while the run trains and is removed once
the outputs are written; the outputs are written last, each atomically, ``metrics.json`` last of all.

Everything task-specific goes through the run's task adapter (``ctx.task``, ``qd.tasks``); a method
receives a :class:`qd.methods.contract.RunContext`, builds its loss with its ``objective`` and never
sees what a batch holds. What the method is (its label, its grid) the run reads from the spec, where
``qd.config.run_spec`` resolved it once.

Try: ``qd train --config config/config.yaml --task digits --model student1 --method qd --bits 4``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path

import torch
import torch.nn as nn

from qd import distributed
from qd.artefact import export_artefact, load_artefact
from qd.config import spec_hash
from qd.errors import MissingRun
from qd.io import atomic_write_json, atomic_write_text
from qd.methods import load_method
from qd.methods.contract import CHECKPOINT, RunContext, RunResult
from qd.models import count_parameters
from qd.provenance import environment
from qd.size import model_sizes
from qd.tasks import DEFAULT_KIND, load_task

REPORTING_RULE = "final epoch, quantized weights"
ARTEFACT = "model.qda"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def task_of(header: dict):
    """The task adapter class of an artefact header (files written before headers named a kind hold the
    default kind's models; a plug-in kind's header names its ``task_entry``)."""
    return load_task(header.get("kind", DEFAULT_KIND), header.get("task_entry"))


def model_from_artefact(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict, dict]:
    """``(model, codes, header)`` from a compressed artefact: the model holds exactly the saved weights."""
    state_dict, codes, header = load_artefact(path)
    meta = header.get("model_meta", header.get("shape"))  # format 1 files called it 'shape'
    model = task_of(header).build_model(header["model"], meta)
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
    task = load_task(spec["kind"], spec.get("task_entry"))(spec, folder, device)
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
    # a run resumed from a checkpoint counts the epochs earlier processes trained as well
    row = result_row(ctx, result, metrics, size_on_disk, time.perf_counter() - started + ctx.resumed_seconds)
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
    plugin = {"task_entry": spec["task_entry"]} if "task_entry" in spec else {}  # a plug-in kind's adapter
    return {"kind": spec["kind"], **plugin, "model": spec["model"], "model_meta": ctx.task.model_meta(), "run": spec["run"],
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
    info = spec["method"]["info"]  # resolved once, when the spec was written (qd.config.run_spec)
    row = {
        "preset": spec["preset"], "run": spec["run"], "role": spec["role"], "task": spec["task"],
        "kind": spec["kind"], **({"task_entry": spec["task_entry"]} if "task_entry" in spec else {}),
        "dataset": spec["dataset"], "model": spec["model"]["name"],
        "params": count_parameters(model), "method": spec["method"]["name"],
        "bits": spec["method"]["bits"], "bucket": spec["method"]["bucket_size"],
        "policy": ctx.policy().describe() if quantized else None,
        "seed": spec["seed"],
        "primary_metric": ctx.task.info.primary,
        "method_label": info["label"],
        "uniform_grid": info["uniform_grid"] if quantized else None,
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
