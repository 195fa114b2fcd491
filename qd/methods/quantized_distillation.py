"""Quantized distillation (Algorithm 1) and quantized training without a teacher.

Each step runs forward and backward through ``Q(w)`` (uniform, bucketed) and applies the gradient to
the full-precision weights ``w`` (straight-through); the model returned holds ``Q(w)`` at the end.
Per-epoch accuracies are those of the quantized weights (the official code logged the shadow
weights' accuracy, its issue #17).
"""
from __future__ import annotations

import torch.nn.functional as F

from qd.run import RunContext, RunResult, load_codes
from qd.ste import quantized_forward
from qd.train import Fit


def _train_quantized(ctx: RunContext, distill: bool) -> RunResult:
    model = ctx.new_model()
    quantizer = ctx.uniform_quantizer()
    quantizers = {name: quantizer for name in ctx.quantized_names(model)}

    def forward(x):
        return quantized_forward(model, quantizers, x)

    def loss(x, y):
        logits = forward(x)
        return ctx.distillation(logits, ctx.teacher_logits(x), y) if distill else F.cross_entropy(logits, y)

    history = ctx.fit(Fit(params=list(model.parameters()), loss=loss, evaluate=ctx.evaluator(forward),
                          modules=[model], state=quantizer.state, load_state=quantizer.load_state))
    params = dict(model.named_parameters())
    codes = {name: quantizer.encode(params[name]) for name in quantizers}
    load_codes(model, codes)
    return RunResult(model, codes, history)


def quantized_distillation(ctx: RunContext) -> RunResult:
    """QD: the distillation loss toward the teacher, through quantized weights."""
    return _train_quantized(ctx, distill=True)


def quantized_training(ctx: RunContext) -> RunResult:
    """QT: cross-entropy through quantized weights, no teacher."""
    return _train_quantized(ctx, distill=False)
