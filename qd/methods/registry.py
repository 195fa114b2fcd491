"""The method registry: what each method needs, without importing torch.

The workflow reads this while it builds the DAG (which runs need a teacher, which start from another
method's student, which keys of the config each run reads); ``qd.methods.load_method`` imports the
function itself only inside a job.

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
    quantized: bool  # produces quantized weights (runs once per bits x bucket variant); reads `quant`
    needs_teacher: bool  # reads the task's trained teacher
    source: str | None  # the method whose trained student it starts from
    label: str  # the name tables and figures use
    trains: bool = True  # runs the training engine; reads `train`
    distills: bool = False  # uses the distillation loss; reads `distill`


BUILTIN = {
    "fp": MethodInfo("fp", "qd.methods.baselines:full_precision", False, False, None, "FP normal"),
    "distill": MethodInfo("distill", "qd.methods.baselines:distilled", False, True, None, "FP distilled",
                          distills=True),
    "pm": MethodInfo("pm", "qd.methods.post_mortem:post_mortem", True, False, "distill", "PM quantization",
                     trains=False),
    "qt": MethodInfo("qt", "qd.methods.quantized_distillation:quantized_training", True, False, None,
                     "Quantized training"),
    "qd": MethodInfo("qd", "qd.methods.quantized_distillation:quantized_distillation", True, True, None,
                     "Quantized distillation", distills=True),
    "dq": MethodInfo("dq", "qd.methods.differentiable_quantization:differentiable_quantization", True, False,
                     "distill", "Differentiable quantization", distills=True),
    "pretrained": MethodInfo("pretrained", "qd.methods.pretrained:pretrained", False, False, None,
                             "Pretrained (torchvision V1)", trains=False),
}
# the keys of a method's config block that configure the registry entry or the run grid, not the method
GRID_KEYS = ("entry", "quantized", "needs_teacher", "source", "trains", "distills", "label", "train", "bits",
             "buckets", "policy", "by_bits")


def method_info(name: str, options: dict) -> MethodInfo:
    """The registry entry of ``name``, adjusted by its config options (custom methods included)."""
    if name in BUILTIN and "entry" not in options:
        base = BUILTIN[name]
        needs_teacher, distills = base.needs_teacher, base.distills
        if name == "dq":
            distills = options.get("use_distillation", True)
            needs_teacher = distills and options.get("distill_from") == "teacher"
        return MethodInfo(name, base.entry, base.quantized, needs_teacher, options.get("source", base.source),
                          base.label, base.trains, distills)
    if "entry" not in options:
        raise KeyError(name)
    needs_teacher = options.get("needs_teacher", False)
    return MethodInfo(name, options["entry"], options.get("quantized", False), needs_teacher,
                      options.get("source"), options.get("label", name), options.get("trains", True),
                      options.get("distills", needs_teacher))
