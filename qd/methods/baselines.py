"""Full-precision baselines: a student trained on the task's own loss (``fp``) or distilled (``distill``)."""
from __future__ import annotations

from qd.run import RunContext, RunResult
from qd.train import Fit


def full_precision(ctx: RunContext) -> RunResult:
    """Normal training: the task's loss on the labels (also how teachers are trained)."""
    model = ctx.new_model()
    fit = Fit(params=list(model.parameters()), loss=ctx.objective(model), evaluate=ctx.evaluator(model),
              modules=[model])
    return RunResult(model, history=ctx.fit(fit))


def distilled(ctx: RunContext) -> RunResult:
    """A full-precision student trained with the distillation loss toward the teacher."""
    model = ctx.new_model()
    fit = Fit(params=list(model.parameters()), loss=ctx.objective(model, ctx.teacher),
              evaluate=ctx.evaluator(model), modules=[model])
    return RunResult(model, history=ctx.fit(fit))
