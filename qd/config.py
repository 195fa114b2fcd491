"""Configuration: validation against the schema, defaults, the run grid and each run's spec.

Torch-free on purpose: the Snakefile imports this to build the DAG, and ``snakemake -n`` must list it
in seconds. A *run* is one folder ``results/<preset>/<task>/<model>/<method>/<variant>/seed<k>/``;
``variant`` is ``fp32`` for unquantized methods and ``b<bits>-d<bucket>`` or ``b<bits>-nobucket`` for
quantized ones. ``run_spec`` gives everything a job needs to reproduce the run; its hash is the row's
config hash.

Try: ``qd plan --config config/config.yaml`` (lists the runs the config asks for).
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from qd.errors import ConfigError
from qd.methods.registry import BUILTIN, MethodInfo, method_info

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
FP_VARIANT = "fp32"
TEACHER_METHOD = "fp"
_VARIANT = re.compile(r"^b(?P<bits>\d+)-(?:d(?P<bucket>\d+)|(?P<nobucket>nobucket))$")


# ---------------------------------------------------------------- validation


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class):
    """A validator that fills ``default`` values into the instance while it validates."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        prefix = f"{key}." if error.absolute_path else ""
        return f"unknown key {', '.join(prefix + e for e in extra)}{hint}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "oneOf":
        return f"{key}: {error.instance!r} is not valid; expected {_expected(error.validator_value)}"
    return f"{key}: {error.message}"


def _expected(options: list) -> str:
    parts = []
    for o in options:
        t = o.get("type", "value")
        if "minimum" in o:
            parts.append(f"{t} >= {o['minimum']}")
        else:
            parts.append(str(t))
    return " or ".join(parts)


def validate(config: dict, source: str = "config") -> dict:
    """A validated deep copy of ``config`` with schema defaults filled in; raises :class:`ConfigError`."""
    cfg = copy.deepcopy(config)
    errors = sorted(_Validator(load_schema()).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    try:
        problems += semantic_problems(cfg)
    except (KeyError, TypeError, AttributeError):
        pass  # the schema errors above already explain why the config cannot be read further
    if problems:
        raise ConfigError(problems, source)
    return cfg


def preset_file(name: str) -> Path:
    """``config/config.yaml`` for the demo, ``config/presets/<name>.yaml`` otherwise."""
    return ROOT / "config" / ("config.yaml" if name == "demo" else f"presets/{name}.yaml")


def with_base(cfg: dict, seen: tuple = ()) -> dict:
    """``cfg`` merged over the preset its ``base`` key names (recursively), without the ``base`` key."""
    if "base" not in cfg:
        return cfg
    name = cfg["base"]
    path = preset_file(name)
    if name in seen or not path.exists():
        why = "a cycle" if name in seen else f"no such preset ({path} does not exist)"
        raise ConfigError([f"base: {name!r} is {why}"])
    base = with_base(yaml.safe_load(path.read_text()) or {}, seen + (name,))
    return deep_merge(base, {k: v for k, v in cfg.items() if k != "base"})


def read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError([f"config file {path} does not exist"], str(path))
    return yaml.safe_load(path.read_text()) or {}


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """Read a YAML config (with its ``base`` preset), apply ``overrides`` (deep-merged) and validate it."""
    path = Path(path)
    cfg = with_base(read_yaml(path))
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate(cfg, str(path))


def deep_merge(base: dict, *overrides: dict | None) -> dict:
    out = copy.deepcopy(base)
    for over in overrides:
        for k, v in (over or {}).items():
            out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def semantic_problems(cfg: dict) -> list[str]:
    """What the schema cannot say: unknown methods, missing sources, models and teachers."""
    from qd.models import known_models

    problems = []
    for task, t in cfg["tasks"].items():
        methods = task_methods(cfg, task)
        for name, opts in methods.items():
            if name not in BUILTIN and "entry" not in opts:
                problems.append(
                    f"methods.{name}: unknown method {name!r}; built-in methods are {', '.join(BUILTIN)}; "
                    f"a custom method needs methods.{name}.entry = 'package.module:function'")
                continue
            info = method_info(name, opts)
            if info.source and info.source not in methods:
                problems.append(f"methods.{name}.source: {name!r} starts from method {info.source!r}, "
                                f"which is not among the configured methods ({', '.join(methods)})")
        family = t["models"]["family"]
        for role, names in (("teacher", [t["models"]["teacher"]]), ("students", t["models"]["students"])):
            for m in names:
                if m not in known_models(family):
                    problems.append(f"tasks.{task}.models.{role}: unknown {family} model {m!r}; "
                                    f"known: {', '.join(known_models(family))}")
        if t["models"]["teacher"] in t["models"]["students"]:
            problems.append(f"tasks.{task}.models.students: the teacher {t['models']['teacher']!r} "
                            "cannot also be a student (their run folders would collide)")
    return problems


# ---------------------------------------------------------------- the run grid


@dataclass(frozen=True, order=True)
class RunId:
    task: str
    model: str
    method: str
    variant: str
    seed: int

    @property
    def path(self) -> str:
        """Run folder relative to ``results/<preset>/``."""
        return f"{self.task}/{self.model}/{self.method}/{self.variant}/seed{self.seed}"


def data_file(results: str | Path, task: str) -> Path:
    """A task's prepared dataset under ``results/<preset>/``, read by every run of the task."""
    return Path(results) / task / "data" / "split.pt"


def task_methods(cfg: dict, task: str) -> dict:
    """Method options for ``task``: the global ``methods`` with the task's overrides merged in."""
    overrides = cfg["tasks"][task].get("methods", {})
    return {name: deep_merge(opts, overrides.get(name, {})) for name, opts in cfg["methods"].items()}


def info(cfg: dict, task: str, method: str) -> MethodInfo:
    return method_info(method, task_methods(cfg, task)[method])


def variant_name(bits: int | None, bucket: int | None) -> str:
    if bits is None:
        return FP_VARIANT
    return f"b{bits}-" + ("nobucket" if bucket is None else f"d{bucket}")


def parse_variant(variant: str) -> tuple[int | None, int | None]:
    """``(bits, bucket_size)`` of a variant name; ``(None, None)`` for ``fp32``."""
    if variant == FP_VARIANT:
        return None, None
    m = _VARIANT.match(variant)
    if not m:
        raise ValueError(f"bad variant {variant!r}: expected 'fp32', 'b<bits>-d<bucket>' or 'b<bits>-nobucket'")
    return int(m["bits"]), None if m["nobucket"] else int(m["bucket"])


def method_variants(cfg: dict, task: str, method: str) -> list[str]:
    opts = task_methods(cfg, task)[method]
    if not info(cfg, task, method).quantized:
        return [FP_VARIANT]
    bits = opts.get("bits", cfg["quant"]["bits"])
    buckets = opts.get("buckets", [cfg["quant"]["bucket_size"]])
    return [variant_name(b, d) for b in bits for d in buckets]


def teacher_run(cfg: dict, task: str) -> RunId:
    return RunId(task, cfg["tasks"][task]["models"]["teacher"], TEACHER_METHOD, FP_VARIANT, cfg["teacher_seed"])


def source_run(cfg: dict, run: RunId) -> RunId | None:
    """The trained student a run starts from (same model and seed), if its method has one."""
    src = info(cfg, run.task, run.method).source
    return None if src is None else RunId(run.task, run.model, src, FP_VARIANT, run.seed)


def student_runs(cfg: dict) -> list[RunId]:
    runs = []
    for task, t in cfg["tasks"].items():
        for model in t["models"]["students"]:
            for method in task_methods(cfg, task):
                for variant in method_variants(cfg, task, method):
                    runs += [RunId(task, model, method, variant, s) for s in cfg["seeds"]]
    return runs


def planned_runs(cfg: dict) -> list[RunId]:
    """Every run the config asks for: the teachers first, then every student run."""
    return [teacher_run(cfg, t) for t in cfg["tasks"]] + student_runs(cfg)


# ---------------------------------------------------------------- run specs


def _dropout(cfg: dict, task: str, method: str, is_teacher: bool) -> bool:
    setting = cfg["tasks"][task]["models"]["dropout"]
    if setting != "auto":
        return setting == "on"
    if is_teacher:
        return True
    i = info(cfg, task, method)
    # distilled students drop dropout (official code); PM/DQ inherit their source student's layout
    uses_teacher = i.needs_teacher or (i.source is not None and info(cfg, task, i.source).needs_teacher)
    return not uses_teacher


def _model_spec(cfg: dict, task: str, name: str, dropout: bool) -> dict:
    m = cfg["tasks"][task]["models"]
    return {"family": m["family"], "name": name, "width": m["width"], "logits_relu": m["logits_relu"],
            "dropout": dropout}


def run_spec(cfg: dict, run: RunId) -> dict:
    """Everything one job needs: dataset, model, method and its options, training recipe, seed."""
    t = cfg["tasks"][run.task]
    is_teacher = run.model == t["models"]["teacher"]
    opts = task_methods(cfg, run.task).get(run.method, {}) if not is_teacher else {}
    i = info(cfg, run.task, run.method)
    bits, bucket = parse_variant(run.variant)
    train_layers = [cfg["train"], t.get("train")]
    train_layers.append(t.get("teacher_train") if is_teacher else opts.get("train"))
    quant = dict(cfg["quant"], policy=opts.get("policy", cfg["quant"]["policy"]))
    spec = {
        "preset": cfg["preset"],
        "run": run.path,
        "role": "teacher" if is_teacher else "student",
        "task": run.task,
        "kind": t["kind"],
        "dataset": t["dataset"],
        "model": _model_spec(cfg, run.task, run.model, _dropout(cfg, run.task, run.method, is_teacher)),
        "method": {
            "name": run.method, "entry": i.entry, "quantized": i.quantized, "needs_teacher": i.needs_teacher,
            "source": i.source, "bits": bits, "bucket_size": bucket,
            "options": {k: v for k, v in opts.items() if k not in ("train", "bits", "buckets", "entry")},
        },
        "quant": quant,
        "distill": cfg["distill"],
        "train": deep_merge(*train_layers),
        "evaluation": cfg["evaluation"],
        "seed": run.seed,
    }
    if i.needs_teacher:
        tr = teacher_run(cfg, run.task)
        spec["teacher"] = {"run": tr.path, "model": _model_spec(cfg, run.task, tr.model, True)}
    return spec


def spec_hash(spec: dict) -> str:
    """Short stable hash of a run spec (the result row's ``config_hash``)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
