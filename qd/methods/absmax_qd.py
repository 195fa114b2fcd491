"""Quantized distillation with symmetric absmax scaling: a method in one file (docs/adding-a-method.md).

Like the paper's quantized distillation (Algorithm 1) but with another quantizer: each bucket of a
weight tensor is scaled by its largest magnitude, ``step = max|w| / (2**(b-1) - 1)``, and rounded to
the signed integer levels ``-(2**(b-1) - 1) .. 2**(b-1) - 1``, so zero is exactly representable and one
fp32 number per bucket (the step) replaces the paper's two (min and max). The student trains from
scratch on the distillation loss through these weights, straight through.

Listed in a config as::

    methods:
      absmax_qd: {entry: "qd.methods.absmax_qd:absmax_qd", zero_level: true}
"""
from __future__ import annotations

# What the method is: the workflow reads this without running the method (no torch import here).
PROPERTIES = {"quantized": True, "needs_teacher": True, "distills": True, "label": "QD (absmax scaling)",
              "uniform_grid": True, "granularity": "bucket"}

# Its own options, validated with the config like a built-in's.
OPTIONS = {
    "properties": {
        "zero_level": {"type": "boolean", "default": True,
                       "description": "odd number of levels with 0 among them (else 2**b levels, no zero)"},
    },
}


def absmax_qd(ctx):
    import torch

    from qd.methods.contract import RunResult, load_codes
    from qd.quantizers.layouts import integer_codes, level_values, to_groups
    from qd.ste import straight_through, substituted_forward
    from qd.train import Fit

    bits, bucket = ctx.bits, ctx.bucket_size
    qmax = 2 ** (bits - 1) - 1 if ctx.spec["method"]["options"]["zero_level"] else 2 ** (bits - 1)
    qmin = -qmax if ctx.spec["method"]["options"]["zero_level"] else -(2 ** (bits - 1))

    def levels_and_steps(w):
        rows = to_groups(w.detach(), None, bucket)
        steps = (rows.abs().amax(dim=1) / qmax).clamp_min(1e-12)
        levels = torch.round(rows / steps[:, None]).clamp_(qmin, qmax).long()
        return levels, steps

    def quantize(w):
        levels, steps = levels_and_steps(w)
        return level_values(levels, steps[:, None], None, w.dtype).reshape(-1)[: w.numel()].view(w.shape)

    def encode(w):
        levels, steps = levels_and_steps(w)
        return integer_codes(levels.reshape(-1)[: w.numel()], steps, None, qmin, qmax, tuple(w.shape), w.dtype,
                             bucket_size=bucket)

    model = ctx.new_model()
    names = ctx.quantized_names(model)
    params = dict(model.named_parameters())

    def forward(*inputs):
        return substituted_forward(model, {n: straight_through(params[n], quantize) for n in names}, *inputs)

    fit = Fit(params=list(model.parameters()), loss=ctx.objective(forward, ctx.teacher),
              evaluate=ctx.evaluator(forward), modules=[model])
    history = ctx.fit(fit)
    codes = {n: encode(params[n].detach()) for n in names}
    load_codes(model, codes)
    return RunResult(model, codes, history)
