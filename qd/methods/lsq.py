"""Learned step size quantization (LSQ; Esser et al., ICLR 2020) as a plug-in method, a modern baseline.

Starting from a trained full-precision student (``source``, as LSQ fine-tunes a trained network), the
weights and one learned step per tensor, channel or bucket are trained together through LSQ's fake
quantizer (``qd.quantizers.lsq``): the weights straight through, the steps by LSQ's scaled gradient,
in their own parameter group (``step_lr``, no weight decay). With ``use_distillation`` the loss is the
distillation loss toward the task's teacher, as in quantized distillation; without it, the task's own.

Config (``methods.<name>``)::

    lsq:       {entry: "qd.methods.lsq:lsq"}                          # distilled, per-bucket steps
    lsq_plain: {entry: "qd.methods.lsq:lsq", use_distillation: false} # the task's loss only

The run folders name the steps' granularity: ``b4-d256`` (per bucket), ``b4-tensor``, ``b4-channel``.
This module imports torch only inside :func:`lsq`, so listing it costs the workflow nothing.
"""
from __future__ import annotations

OPTIONS = {
    "properties": {
        "use_distillation": {"type": "boolean", "default": True,
                             "description": "distillation loss toward the teacher (else the task's own loss)"},
        "step_granularity": {"enum": ["bucket", "tensor", "channel"], "default": "bucket",
                             "description": "what one learned step covers"},
        "symmetric": {"type": "boolean", "default": True,
                      "description": "signed levels and no zero point (LSQ's weights) or unsigned with one"},
        "implementation": {"enum": ["torch", "autograd"], "default": "torch",
                           "description": "PyTorch's learnable fake-quantize ops or this suite's autograd function"},
        "step_lr": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "null"}], "default": None,
                    "description": "learning rate of the steps (null = the recipe's)"},
    },
}


def PROPERTIES(options: dict) -> dict:  # noqa: N802 - the registry reads a module attribute of this name
    distill = options.get("use_distillation", True)
    return {"quantized": True, "needs_teacher": distill, "distills": distill, "source": "distill",
            "label": "LSQ" if distill else "LSQ (no distillation)", "uniform_grid": True,
            "granularity": options.get("step_granularity", "bucket")}


def lsq(ctx):
    from qd.quantizers.lsq import LSQQuantizers
    from qd.methods.contract import RunResult, load_codes
    from qd.ste import substituted_forward
    from qd.train import Fit

    opts = ctx.spec["method"]["options"]
    model = ctx.source_copy()
    names = ctx.quantized_names(model)
    params = dict(model.named_parameters())
    bank = LSQQuantizers({n: params[n].detach() for n in names}, ctx.bits, granularity=opts["step_granularity"],
                         bucket_size=ctx.bucket_size or 256, symmetric=opts["symmetric"],
                         implementation=opts["implementation"]).to(ctx.device)

    def forward(*inputs):
        # not qd.ste.quantized_forward: its straight-through wrapper would cut the steps' gradient
        return substituted_forward(model, bank({n: params[n] for n in names}), *inputs)

    steps = {"params": bank.steps(), "weight_decay": 0.0}
    if opts["step_lr"]:
        steps["lr"] = opts["step_lr"]
    fit = Fit(params=[{"params": list(model.parameters())}, steps],
              loss=ctx.objective(forward, ctx.teacher if opts["use_distillation"] else None),
              evaluate=ctx.evaluator(forward), modules=[model, bank])
    history = ctx.fit(fit)
    codes = bank.encode({n: params[n].detach() for n in names})
    load_codes(model, codes)
    return RunResult(model, codes, history)
