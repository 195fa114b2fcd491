"""Post-training ('post-mortem', PM) quantization: quantize a trained student once, no retraining.

The source is the distilled full-precision student (official code); run with and without bucketing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qd.methods.contract import RunContext, RunResult

# torch and the run's contract are imported inside the functions: the registry imports this module
# while the workflow builds its DAG (qd.methods.registry.plugin), which must stay torch-free


def post_mortem(ctx: RunContext) -> RunResult:
    from qd.methods.contract import RunResult, load_codes

    model = ctx.source_copy()
    quantizer = ctx.uniform_quantizer()
    params = dict(model.named_parameters())
    codes = {name: quantizer.encode(params[name]) for name in ctx.quantized_names(model)}
    load_codes(model, codes)
    return RunResult(model, codes)
