"""Differentiable quantization (Algorithm 2, notes 1.7-1.8).

The weights of a trained full-precision student stay fixed; what is learned is one vector of
non-uniform quantization points per tensor, by SGD through ``Q(w, p)``. Options (config
``methods.dq``):

* ``init``: ``quantiles`` (points at the percentiles of the scaled weights) or ``uniform``;
* ``redistribute_bits``: share the points between tensors in proportion to their gradient norms,
  each tensor keeping at least half its ``2**bits`` (so counts need not be powers of two); the norms
  are read on ``grad_batches`` batches, as ``redistribute_from`` says: ``ordered`` (the default) in
  eval mode on the first training batches in order, unaugmented (for translation the shortest
  sentences), or ``training``, the official code's: in train mode (dropout on) on the first shuffled,
  augmented training batches;
* ``use_distillation`` / ``distill_from``: distillation loss toward ``self`` (the unquantized
  student, as the official code does) or ``teacher`` (the task's teacher); else cross-entropy.

Points are re-sorted after every step and not clamped; BatchNorm stays in train mode, so its running
statistics follow the quantized weights (official code).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from qd.methods.contract import RunContext, RunResult

# torch and the run's contract are imported inside the functions: the registry imports this module
# while the workflow builds its DAG (qd.methods.registry.plugin), which must stay torch-free


def PROPERTIES(options: dict) -> dict:  # noqa: N802 - the registry reads a module attribute of this name
    """What dq reads besides its registry entry (qd.methods.registry.BUILTIN): the distillation loss
    unless ``use_distillation`` is off, toward the task's teacher only with ``distill_from: teacher``."""
    distills = options.get("use_distillation", True)
    return {"distills": distills, "needs_teacher": distills and options.get("distill_from") == "teacher"}


REDISTRIBUTE_FROM = ("ordered", "training")


def gradient_norms(model, names: list[str], task, n_batches: int, batch_size: int, source: str = "ordered",
                   seed: int = 0) -> list[float]:
    """L2 norm of each named parameter's gradient of the task's own loss (no distillation), averaged
    over ``n_batches`` training batches (the official code's 'fisher information'):

    * ``source="ordered"``: ``model`` in eval mode, the first batches of ``task.eval_batches("train")``
      (in order, unaugmented; a translation task's are its shortest sentences);
    * ``source="training"``: ``model`` in train mode, the first batches of an epoch of
      ``task.train_batches`` shuffled (and augmented) by a generator seeded with ``seed``, as the
      official code reads them (``cnn_models/conv_forward_model.py`` and ``translation_models/model.py``
      ``optimize_quantization_points``: the model in train mode over its shuffled train loader). In
      train mode the forward passes update BatchNorm's running statistics: pass a model that may
      change."""
    import torch

    if source not in REDISTRIBUTE_FROM:
        raise ValueError(f"methods.dq.redistribute_from must be one of {REDISTRIBUTE_FROM}, got {source!r}")
    params = dict(model.named_parameters())
    grads = {n: torch.zeros_like(params[n]) for n in names}
    was_training = model.training
    model.train(source == "training")
    batches = (task.train_batches(batch_size, torch.Generator().manual_seed(seed)) if source == "training"
               else task.eval_batches("train", batch_size))
    used = 0
    for used, batch in enumerate(batches, start=1):
        model.zero_grad(set_to_none=True)
        task.loss(model(*task.inputs(batch)), batch).backward()
        for n in names:
            grads[n] += params[n].grad
        if used == n_batches:
            break
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return [(grads[n] / max(used, 1)).norm().item() for n in names]


def redistribute_points(budgets: list[int], grad_norms: list[float]) -> list[int]:
    """Points per tensor: half of each budget, the rest shared by gradient norm (total kept).

    Rounding surplus is taken from the largest allocation; a shortfall is added to the smallest.
    """
    base = [p // 2 for p in budgets]
    rest = sum(budgets) - sum(base)
    total = sum(grad_norms)
    shares = [g / total for g in grad_norms] if total > 0 else [1 / len(budgets)] * len(budgets)
    alloc = [b + round(s * rest) for b, s in zip(base, shares)]
    diff = sum(alloc) - sum(budgets)
    if diff > 0:
        i = max(range(len(alloc)), key=alloc.__getitem__)
        alloc[i] -= diff
    elif diff < 0:
        i = min(range(len(alloc)), key=alloc.__getitem__)
        alloc[i] -= diff
    return alloc


def initial_points(w: torch.Tensor, n_points: int, init: str, bucket_size: int | None) -> torch.Tensor:
    from qd.quant import quantile_points, uniform_points

    if init == "quantiles":
        return quantile_points(w, n_points, bucket_size)
    if init == "uniform":
        return uniform_points(n_points, dtype=w.dtype).to(w.device)
    raise ValueError(f"methods.dq.init: unknown initialisation {init!r} (quantiles or uniform)")


def differentiable_quantization(ctx: RunContext) -> RunResult:
    import torch

    from qd.methods.contract import RunResult, load_codes
    from qd.quant import encode_nonuniform, quantize_nonuniform
    from qd.ste import substituted_forward
    from qd.train import Fit

    opts = ctx.spec["method"]["options"]
    model = ctx.source_copy()
    frozen = ctx.source_copy().eval()  # the unquantized student: the 'self' teacher
    for p in model.parameters():
        p.requires_grad_(False)
    names = ctx.quantized_names(model)
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    budgets = [2**ctx.bits] * len(names)
    if opts["redistribute_bits"]:
        source = opts.get("redistribute_from", "ordered")
        # in train mode the passes update BatchNorm's statistics: a copy reads them, not the 'self' teacher
        probe = frozen if source == "ordered" else ctx.source_copy()
        norms = gradient_norms(probe, names, ctx.task, opts["grad_batches"], ctx.spec["train"]["batch_size"],
                               source, ctx.spec["seed"])
        budgets = redistribute_points(budgets, norms)
    points = [torch.nn.Parameter(initial_points(weights[n], k, opts["init"], ctx.bucket_size))
              for n, k in zip(names, budgets)]

    def forward(*inputs):
        quantized = {n: quantize_nonuniform(weights[n], p, ctx.bucket_size) for n, p in zip(names, points)}
        return substituted_forward(model, quantized, *inputs)

    teacher = None
    if opts["use_distillation"]:
        teacher = ctx.teacher if opts["distill_from"] == "teacher" else frozen

    @torch.no_grad()
    def keep_sorted():
        for p in points:
            p.copy_(torch.sort(p).values)

    fit = Fit(params=points, loss=ctx.objective(forward, teacher), evaluate=ctx.evaluator(forward), modules=[model],
              after_step=keep_sorted)
    history = ctx.fit(fit)
    codes = {n: encode_nonuniform(weights[n], p.detach(), ctx.bucket_size) for n, p in zip(names, points)}
    for p in model.parameters():
        p.requires_grad_(True)
    load_codes(model, codes)
    return RunResult(model, codes, history, extra={"dq_points_per_tensor": budgets})
