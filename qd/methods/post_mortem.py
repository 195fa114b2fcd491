"""Post-training ('post-mortem', PM) quantization: quantize a trained student once, no retraining.

The source is the distilled full-precision student (official code); run with and without bucketing.
"""
from __future__ import annotations

from qd.run import RunContext, RunResult, load_codes


def post_mortem(ctx: RunContext) -> RunResult:
    model = ctx.source_copy()
    quantizer = ctx.uniform_quantizer()
    params = dict(model.named_parameters())
    codes = {name: quantizer.encode(params[name]) for name in ctx.quantized_names(model)}
    load_codes(model, codes)
    return RunResult(model, codes)
