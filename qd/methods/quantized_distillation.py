"""Quantized distillation (Algorithm 1) and quantized training without a teacher.

Each step runs forward and backward through ``Q(w)`` (uniform, bucketed) and applies the gradient to
the full-precision weights ``w`` (straight-through); the model returned holds ``Q(w)`` at the end.
Per-epoch metrics are those of the quantized weights (the official code logged the shadow weights',
its issue #17); with ``train.schedule_reads: full_precision`` the schedule reads the shadow weights'
as the official code did.

Option ``final_quantize_all`` (default off): the final model quantizes *every* parameter, also those the
policy kept in full precision during training, as the official NMT ``train_model`` does
(``translation_models/model.py``: its last quantization ignores ``quantize_first_and_last_layer``, so
the WMT13 QD model's source embedding, trained in fp32, is quantized at the end). The row then says
``final_policy: all``; the size counts those tensors quantized.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qd.methods.contract import RunContext, RunResult

# torch and the run's contract are imported inside the functions: the registry imports this module
# while the workflow builds its DAG (qd.methods.registry.plugin), which must stay torch-free


def _train_quantized(ctx: RunContext, distill: bool) -> RunResult:
    from qd.methods.contract import RunResult, load_codes
    from qd.ste import quantized_forward
    from qd.train import Fit

    model = ctx.new_model()
    quantizer = ctx.uniform_quantizer()
    forward = partial(quantized_forward, model, {name: quantizer for name in ctx.quantized_names(model)})
    fit = Fit(params=list(model.parameters()), loss=ctx.objective(forward, ctx.teacher if distill else None),
              evaluate=ctx.evaluator(forward), modules=[model], state=quantizer.state,
              load_state=quantizer.load_state, evaluate_shadow=ctx.evaluator(model))
    history = ctx.fit(fit)
    params = dict(model.named_parameters())
    final_all = ctx.spec["method"]["options"].get("final_quantize_all", False)
    names = list(params) if final_all else list(forward.args[1])
    codes = {name: quantizer.encode(params[name]) for name in names}
    load_codes(model, codes)
    return RunResult(model, codes, history, extra={"final_policy": "all"} if final_all else {})


def quantized_distillation(ctx: RunContext) -> RunResult:
    """QD: the distillation loss toward the teacher, through quantized weights."""
    return _train_quantized(ctx, distill=True)


def quantized_training(ctx: RunContext) -> RunResult:
    """QT: the task's own loss through quantized weights, no teacher."""
    return _train_quantized(ctx, distill=False)
