"""The method registry: what each method needs, without importing torch.

The workflow reads this while it builds the DAG (which runs need a teacher, which start from another
method's student, which keys of the config each run reads); ``qd.methods.load_method`` imports the
function itself only inside a job.

A third-party method is one module listed in the config by its entry point::

    methods:
      my_method: {entry: "my_pkg.my_module:my_method", my_option: 3}

The module declares ``PROPERTIES`` (what :class:`MethodInfo` holds: quantized, needs_teacher, source,
trains, distills, label, uniform_grid, granularity; the config may override each) and ``OPTIONS`` (the
JSON schema of its own options, validated with the config). The function receives a
:class:`qd.methods.contract.RunContext` and returns a :class:`qd.methods.contract.RunResult`.
docs/adding-a-method.md walks through one.

A built-in method's module may declare ``PROPERTIES`` too (``dq``: whether it distills depends on its
options); :func:`method_info` is the one resolver of a method's properties: ``qd.config.run_spec``
calls it when a run's spec is written and the spec carries the result (``spec["method"]["info"]``).
"""
from __future__ import annotations

import functools
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
    uniform_grid: bool = True  # its codes are integer levels on an even grid (claim 5: integer kernels)
    granularity: str = "bucket"  # what its scales cover: bucket (b<k>-d<d>|nobucket), tensor or channel


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
    # needs_teacher and distills: declared by its module as a function of its options (PROPERTIES)
    "dq": MethodInfo("dq", "qd.methods.differentiable_quantization:differentiable_quantization", True, False,
                     "distill", "Differentiable quantization", uniform_grid=False),
    "pretrained": MethodInfo("pretrained", "qd.methods.pretrained:pretrained", False, False, None,
                             "Pretrained (torchvision V1)", trains=False),
}
# the keys of a method's config block that configure the registry entry or the run grid, not the method
GRID_KEYS = ("entry", "quantized", "needs_teacher", "source", "trains", "distills", "label", "uniform_grid",
             "granularity", "train", "bits", "buckets", "policy", "by_bits")
PROPERTY_KEYS = ("quantized", "needs_teacher", "source", "trains", "distills", "label", "uniform_grid", "granularity")


@functools.cache
def plugin(entry: str) -> tuple[dict, dict]:
    """``(PROPERTIES, OPTIONS)`` a method module declares: what the method is (the keys of
    :class:`MethodInfo`, as a dict or a function of the method's options) and the JSON schema of its own
    options. Both are optional; a module that
    imports torch only inside its function keeps ``snakemake -n`` fast."""
    import importlib

    module = importlib.import_module(entry.partition(":")[0])
    props = getattr(module, "PROPERTIES", {})
    return (props if callable(props) else dict(props)), dict(getattr(module, "OPTIONS", {}))


def method_info(name: str, options: dict) -> MethodInfo:
    """What method ``name`` is, from its config options: its registry entry (a built-in's, else the
    defaults), what its module declares (``PROPERTIES``), and the config's overrides of each, in that order."""
    builtin = BUILTIN.get(name)
    entry = options.get("entry") or (builtin.entry if builtin else None)
    if entry is None:
        raise KeyError(name)
    props = {k: getattr(builtin, k) for k in PROPERTY_KEYS} if builtin and builtin.entry == entry else {}
    declared = plugin(entry)[0]
    props.update(declared(options) if callable(declared) else declared)
    props.update({k: options[k] for k in PROPERTY_KEYS if k in options})
    needs_teacher = props.get("needs_teacher", False)
    return MethodInfo(name, entry, props.get("quantized", False), needs_teacher, props.get("source"),
                      props.get("label", name), props.get("trains", True), props.get("distills", needs_teacher),
                      props.get("uniform_grid", True), props.get("granularity", "bucket"))
