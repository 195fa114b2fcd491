"""Per-channel quantization-aware training as a plug-in method, a modern baseline.

Like quantized distillation, a student is trained from scratch through quantized weights, here
PyTorch's own per-channel fake quantization (``torch.fake_quantize_per_channel_affine`` via
``qd.quantizers.per_channel``): each output channel gets a scale and zero point from its min and max
(PyTorch's observer rule), ``2**bits`` integer levels, and the weights receive the straight-through
gradient. A 1-D tensor (bias, norm) is one channel. With ``use_distillation`` the loss is the
distillation loss toward the task's teacher; without it, the task's own.

Config (``methods.<name>``)::

    pcq:       {entry: "qd.methods.per_channel_qat:per_channel_qat"}
    pcq_plain: {entry: "qd.methods.per_channel_qat:per_channel_qat", use_distillation: false}

Run folders are ``b<bits>-channel``. This module imports torch only inside the method.
"""
from __future__ import annotations

OPTIONS = {
    "properties": {
        "use_distillation": {"type": "boolean", "default": True,
                             "description": "distillation loss toward the teacher (else the task's own loss)"},
    },
}


def PROPERTIES(options: dict) -> dict:  # noqa: N802 - the registry reads a module attribute of this name
    distill = options.get("use_distillation", True)
    return {"quantized": True, "needs_teacher": distill, "distills": distill, "source": None,
            "label": "Per-channel QAT" if distill else "Per-channel QAT (no distillation)", "uniform_grid": True,
            "granularity": "channel"}


class _Channels:
    """A per-channel quantizer that takes a 1-D tensor as one channel."""

    def __init__(self, bits: int):
        from qd.quantizers.per_channel import PerChannelQuantizer

        self.q = PerChannelQuantizer(bits, axis=0)

    def __call__(self, w):
        return self.q(w.view(1, -1)).view(w.shape) if w.dim() == 1 else self.q(w)

    def encode(self, w):
        import dataclasses

        if w.dim() != 1:
            return self.q.encode(w)
        return dataclasses.replace(self.q.encode(w.view(1, -1)), shape=tuple(w.shape))


def per_channel_qat(ctx):
    from qd.methods.contract import RunResult, load_codes
    from qd.ste import substituted_forward
    from qd.train import Fit

    opts = ctx.spec["method"]["options"]
    model = ctx.new_model()
    names = ctx.quantized_names(model)
    params = dict(model.named_parameters())
    q = _Channels(ctx.bits)

    def forward(*inputs):
        return substituted_forward(model, {n: q(params[n]) for n in names}, *inputs)

    fit = Fit(params=list(model.parameters()),
              loss=ctx.objective(forward, ctx.teacher if opts["use_distillation"] else None),
              evaluate=ctx.evaluator(forward), modules=[model])
    history = ctx.fit(fit)
    codes = {n: q.encode(params[n].detach()) for n in names}
    load_codes(model, codes)
    return RunResult(model, codes, history)
