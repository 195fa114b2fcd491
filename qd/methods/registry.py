"""The method registry: what each method needs, without importing torch.

The workflow reads this while it builds the DAG (which runs need a teacher, which start from another
method's student); ``qd.methods.load`` imports the function itself only inside a job.

A third-party method is listed in the config with its entry point and needs::

    methods:
      my_method: {entry: "my_pkg.my_module:my_method", quantized: true, needs_teacher: true}

and receives a :class:`qd.run.RunContext`, returning a :class:`qd.run.RunResult`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    entry: str  # "package.module:function"
    quantized: bool  # produces quantized weights (runs once per bits x bucket variant)
    needs_teacher: bool  # reads the task's trained teacher
    source: str | None  # the method whose trained student it starts from
    label: str  # the name tables and figures use


BUILTIN = {
    "fp": MethodInfo("fp", "qd.methods.baselines:full_precision", False, False, None, "FP normal"),
    "distill": MethodInfo("distill", "qd.methods.baselines:distilled", False, True, None, "FP distilled"),
    "pm": MethodInfo("pm", "qd.methods.post_mortem:post_mortem", True, False, "distill", "PM quantization"),
    "qt": MethodInfo("qt", "qd.methods.quantized_distillation:quantized_training", True, False, None,
                     "Quantized training"),
    "qd": MethodInfo("qd", "qd.methods.quantized_distillation:quantized_distillation", True, True, None,
                     "Quantized distillation"),
    "dq": MethodInfo("dq", "qd.methods.differentiable_quantization:differentiable_quantization", True, False,
                     "distill", "Differentiable quantization"),
}


def method_info(name: str, options: dict) -> MethodInfo:
    """The registry entry of ``name``, adjusted by its config options (custom methods included)."""
    if name in BUILTIN and "entry" not in options:
        base = BUILTIN[name]
        needs_teacher = base.needs_teacher
        if name == "dq":
            needs_teacher = options.get("use_distillation", True) and options.get("distill_from") == "teacher"
        return MethodInfo(name, base.entry, base.quantized, needs_teacher, options.get("source", base.source),
                          base.label)
    if "entry" not in options:
        raise KeyError(name)
    return MethodInfo(name, options["entry"], options.get("quantized", False), options.get("needs_teacher", False),
                      options.get("source"), name)
