"""Inference latency: warm-up, timed repeats, median and inter-quartile range (paper section 2.4's speed claim).

The paper's speed claim is about depth: a forward pass costs roughly in proportion to the number of
layers, so a shallower, wider student (2xResNet-18) runs as fast as ResNet-18 on GPUs, and 1.56x faster
than ResNet-34. :func:`measure_latency` times one model; :func:`depth_comparison` times several on
the same input and reports each relative to a reference.

* CPU: ``time.perf_counter`` around each forward pass (every CPU op is synchronous).
* CUDA: a pair of CUDA events around each forward pass and one synchronisation at the end, so the
  host never waits between repeats and the GPU time of the pass itself is measured.

Everything runs in eval mode under ``torch.inference_mode`` (the mode is restored afterwards), with
``threads`` CPU threads if given. Try::

    python -c "import torch, qd.latency as L, qd.models.resnet as R; \\
               print(L.measure_latency(R.resnet(18), torch.randn(1, 3, 224, 224), repeats=5))"

Exercise it with ``pytest tests/test_latency.py``.
"""
from __future__ import annotations

import statistics
from time import perf_counter
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn


def _as_args(example_input) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def _device_of(model: nn.Module, args: Sequence) -> torch.device:
    for p in model.parameters():
        return p.device
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _batch_of(args: Sequence) -> int | None:
    for a in args:
        if isinstance(a, torch.Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return None


def _quartiles(times_ms: list[float]) -> tuple[float, float, float]:
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0]
    q1, q2, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return q1, q2, q3


def _time_cpu(model, args, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = perf_counter()
        model(*args)
        times.append((perf_counter() - start) * 1e3)
    return times


def _time_cuda(model, args, repeats: int, device: torch.device) -> list[float]:
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for begin, end in events:
        begin.record()
        model(*args)
        end.record()
    torch.cuda.synchronize(device)
    return [begin.elapsed_time(end) for begin, end in events]


def measure_latency(model: nn.Module, example_input, warmup: int = 10, repeats: int = 30,
                    threads: int | None = None) -> dict:
    """Median and IQR in milliseconds of ``model(example_input)`` over ``repeats`` timed passes.

    ``example_input`` is a tensor or a tuple of positional arguments, already on the model's device.
    Returns ``{device, batch, threads, median_ms, iqr_ms, repeats, warmup}``; ``threads`` is the CPU
    thread count the passes ran with.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    args = _as_args(example_input)
    device = _device_of(model, args)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    if threads is not None:
        torch.set_num_threads(threads)
    model.eval()
    try:
        with torch.inference_mode():
            for _ in range(warmup):  # allocator, cuDNN autotuning, lazy init and caches settle here
                model(*args)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                times = _time_cuda(model, args, repeats, device)
            else:
                times = _time_cpu(model, args, repeats)
        used_threads = torch.get_num_threads()
    finally:
        model.train(was_training)
        torch.set_num_threads(previous_threads)
    q1, median, q3 = _quartiles(times)
    return {"device": str(device), "batch": _batch_of(args), "threads": used_threads, "median_ms": median,
            "iqr_ms": q3 - q1, "repeats": repeats, "warmup": warmup}


def depth_comparison(models: Mapping[str, nn.Module], example_input, reference: str | None = None,
                     **timing) -> list[dict]:
    """Latency of each named model on the same input, with its speed relative to ``reference``.

    ``reference`` defaults to the first model. Each row holds the model name, its parameter count,
    the :func:`measure_latency` fields, and ``relative_time`` (its median over the reference's:
    ResNet-34 over ResNet-18 was 263 s / 169 s = 1.56 in the paper's 4-GPU measurement).
    """
    if not models:
        return []
    reference = reference if reference is not None else next(iter(models))
    if reference not in models:
        raise KeyError(f"reference model {reference!r} is not among {list(models)}")
    rows = []
    for name, model in models.items():
        row = {"model": name, "params": sum(p.numel() for p in model.parameters())}
        row.update(measure_latency(model, example_input, **timing))
        rows.append(row)
    base = next(r["median_ms"] for r in rows if r["model"] == reference)
    for row in rows:
        row["relative_time"] = row["median_ms"] / base
    return rows


def time_runs(cfg: dict, results, out, extra=None) -> list[dict]:
    """Latency of the final model of every planned run of ``cfg`` on a batch of its task's test inputs.

    The workflow runs this once, after every training job and with every core reserved, so that no
    timing shares the machine with training; ``evaluation.latency`` sets batch, repeats and threads.
    ``extra(run_folder, latency_settings) -> dict`` adds columns timed in the same job (the ONNX
    models: ``qd.onnx.run.onnx_latency_of``). Writes ``out`` (CSV, one row per run) and returns the rows.
    """
    from pathlib import Path

    import pandas as pd

    from qd.config import data_folder, planned_runs
    from qd.io import atomic_write_text
    from qd.run import ARTEFACT, model_from_artefact, resolve_device, task_of

    results = Path(results)
    lat = cfg["evaluation"]["latency"]
    device = resolve_device(cfg["train"]["device"])
    tasks, rows = {}, []
    for run in planned_runs(cfg):
        model, _, header = model_from_artefact(results / run.path / ARTEFACT, device)
        if run.task not in tasks:
            tasks[run.task] = task_of(header)({"evaluation": {"batch_size": lat["batch_size"]}},
                                              data_folder(results, run.task), device)
        m = measure_latency(model, tasks[run.task].example_input(lat["batch_size"]), warmup=lat["warmup"],
                            repeats=lat["repeats"], threads=lat["threads"])
        rows.append({"run": run.path, "latency_device": m["device"], "latency_batch": m["batch"],
                     "latency_threads": m["threads"], "latency_median_ms": m["median_ms"],
                     "latency_iqr_ms": m["iqr_ms"], "latency_repeats": m["repeats"],
                     **(extra(results / run.path, lat) if extra else {})})
    atomic_write_text(pd.DataFrame(rows).to_csv(index=False), out)
    return rows
