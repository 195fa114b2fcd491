"""Full-precision baselines: a student trained on the task's own loss (``fp``) or distilled (``distill``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qd.methods.contract import RunContext, RunResult

# torch and the run's contract are imported inside the functions: the registry imports this module
# while the workflow builds its DAG (qd.methods.registry.plugin), which must stay torch-free


def _train(ctx: RunContext, teacher) -> RunResult:
    from qd.methods.contract import RunResult
    from qd.train import Fit

    model = ctx.new_model()
    fit = Fit(params=list(model.parameters()), loss=ctx.objective(model, teacher), evaluate=ctx.evaluator(model),
              modules=[model])
    return RunResult(model, history=ctx.fit(fit))


def full_precision(ctx: RunContext) -> RunResult:
    """Normal training: the task's loss on the labels (also how teachers are trained)."""
    return _train(ctx, None)


def distilled(ctx: RunContext) -> RunResult:
    """A full-precision student trained with the distillation loss toward the teacher."""
    return _train(ctx, ctx.teacher)
