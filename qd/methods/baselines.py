"""Full-precision baselines: a student trained with cross-entropy (``fp``) or distilled (``distill``)."""
from __future__ import annotations

import torch.nn.functional as F

from qd.run import RunContext, RunResult
from qd.train import Fit


def full_precision(ctx: RunContext) -> RunResult:
    """Normal training: cross-entropy on the labels (also how teachers are trained)."""
    model = ctx.new_model()
    fit = Fit(params=list(model.parameters()), loss=lambda x, y: F.cross_entropy(model(x), y),
              evaluate=ctx.evaluator(model), modules=[model])
    return RunResult(model, history=ctx.fit(fit))


def distilled(ctx: RunContext) -> RunResult:
    """A full-precision student trained with the distillation loss toward the teacher."""
    model = ctx.new_model()
    fit = Fit(params=list(model.parameters()),
              loss=lambda x, y: ctx.distillation(model(x), ctx.teacher_logits(x), y),
              evaluate=ctx.evaluator(model), modules=[model])
    return RunResult(model, history=ctx.fit(fit))
