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
from qd.methods.registry import BUILTIN, GRID_KEYS, PROPERTY_KEYS, MethodInfo, method_info
from qd.tasks import TASKS, TaskInfo, dataset_info, datasets, task_info

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
FP_VARIANT = "fp32"
_VARIANT = re.compile(r"^b(?P<bits>\d+)-(?:d(?P<bucket>\d+)|(?P<nobucket>nobucket)|(?P<other>tensor|channel))$")
VARIANT_PATTERN = r"fp32|b\d+-(d\d+|nobucket|tensor|channel)"  # the workflow's wildcard constraint


# ---------------------------------------------------------------- validation


def load_schema() -> dict:
    """The config schema with its blocks kept in files of their own (``$ref: "<file>"``) inlined."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for key, sub in schema["properties"].items():
        if isinstance(sub, dict) and str(sub.get("$ref", "")).endswith(".yaml"):
            block = yaml.safe_load((SCHEMA_PATH.parent / sub.pop("$ref")).read_text())
            schema["properties"][key] = {**block, **sub}
    return schema


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


def _method_blocks(cfg: dict):
    """``(key path, block)`` of every method block of a config: the global ones and each task's."""
    if isinstance(cfg.get("methods"), dict):
        yield from ((f"methods.{n}", b) for n, b in cfg["methods"].items() if isinstance(b, dict))
    for t, task in (cfg.get("tasks") or {}).items():
        if isinstance(task, dict) and isinstance(task.get("methods"), dict):
            yield from ((f"tasks.{t}.methods.{n}", b) for n, b in task["methods"].items() if isinstance(b, dict))


def _plugin_options(cfg: dict, schema: dict) -> list[tuple[str, str, dict]]:
    """Take the options a method module declares out of the config, for their own schema."""
    from qd.methods.registry import plugin

    common = set(schema["$defs"]["method_options"]["properties"])
    taken = []
    for path, block in _method_blocks(cfg):
        entry = block.get("entry")
        if isinstance(entry, str) and ":" in entry:
            try:
                declared = set(plugin(entry)[1].get("properties", {}))
            except ImportError:
                declared = set()
            # its own keys leave the block; keys it shares with the built-ins' (use_distillation) stay too
            own = {k: block[k] for k in block if k not in common or k in declared}
            for k in own:
                if k not in common:
                    del block[k]
            taken.append((path, entry, own))
    return taken


def _check_plugin_options(taken, cfg: dict) -> list[str]:
    """Validate each plug-in's own options against its ``OPTIONS`` schema (defaults filled in) and put
    them back; the messages name the key as the built-ins' do."""
    from qd.methods.registry import plugin

    problems = []
    for path, entry, own in taken:
        try:
            schema = plugin(entry)[1]
        except ImportError as e:
            problems.append(f"{path}.entry: cannot import {entry.partition(':')[0]!r} ({e})")
            continue
        schema = {"type": "object", "properties": {}, "additionalProperties": False, **schema}
        for e in _Validator(schema).iter_errors(own):
            msg = _describe(e)
            problems.append(f"{path}.{msg}" if e.absolute_path or not msg.startswith("unknown key ")
                            else msg.replace("unknown key ", f"unknown key {path}.", 1))
        block = _resolve(cfg, path)
        if isinstance(block, dict):
            block.update(own)
    return problems


def _resolve(cfg: dict, path: str):
    node = cfg
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def validate(config: dict, source: str = "config") -> dict:
    """A validated deep copy of ``config`` with schema defaults filled in; raises :class:`ConfigError`."""
    cfg = copy.deepcopy(config)
    schema = load_schema()
    taken = _plugin_options(cfg, schema)
    errors = sorted(_Validator(schema).iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    problems += _check_plugin_options(taken, cfg)
    try:
        problems += semantic_problems(cfg)
    except (KeyError, TypeError, AttributeError, ImportError):
        pass  # the errors above already explain why the config cannot be read further
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
            try:
                info = method_info(name, opts)
            except ImportError:
                continue  # reported with the plug-in's options
            if info.source and info.source not in methods:
                problems.append(f"methods.{name}.source: {name!r} starts from method {info.source!r}, "
                                f"which is not among the configured methods ({', '.join(methods)})")
        family = t["models"]["family"]
        known = list(dict.fromkeys([*known_models(family), *(t["models"].get("architectures") or {})]))
        for role, names in (("teacher", [t["models"]["teacher"]]), ("students", t["models"]["students"])):
            for m in names:
                if known_models(family) and m not in known:  # a plug-in kind's family names its own models
                    problems.append(f"tasks.{task}.models.{role}: unknown {family} model {m!r}; "
                                    f"known: {', '.join(known)}")
        for model, only in t["models"]["methods"].items():
            if model not in t["models"]["students"]:
                problems.append(f"tasks.{task}.models.methods.{model}: {model!r} is not among the students")
            for m in only:
                if m not in methods:
                    problems.append(f"tasks.{task}.models.methods.{model}: method {m!r} is not among the "
                                    f"configured methods ({', '.join(methods)})")
        # the runs that load published weights: method ``pretrained``, or any method whose entry is its
        # function (the ImageNet preset's ``fp``, named so that the paper's tables and claim 1 find it)
        published = {m for m in [*methods, t["models"]["teacher_method"]] if _loads_published(cfg, task, m)}
        pretrained = [m for m in [t["models"]["teacher"]] * (t["models"]["teacher_method"] in published)
                      + [s for s, ms in t["models"]["methods"].items() if published & set(ms)]]
        from qd.pretrained import TEACHERS

        for m in pretrained:
            if family != "resnet" or m not in TEACHERS:
                problems.append(f"tasks.{task}.models: no pretrained weights for {family} model {m!r}; "
                                f"torchvision's V1 weights exist for {', '.join(TEACHERS)} (family resnet)")
        if t["models"]["teacher"] in t["models"]["students"]:
            problems.append(f"tasks.{task}.models.students: the teacher {t['models']['teacher']!r} "
                            "cannot also be a student (their run folders would collide)")
        problems += task_problems(cfg, task)
    return problems


def task_problems(cfg: dict, task: str) -> list[str]:
    """What a task block asks that its kind does not know: an unknown kind, a model family, distillation
    reduction or dataset of another kind (each kind's :class:`qd.tasks.TaskInfo` and datasets say)."""
    t = cfg["tasks"][task]
    try:
        kind = kind_of(cfg, task)
    except (ValueError, ImportError) as e:
        return [f"tasks.{task}.kind: {e}"]
    problems = []
    family = t["models"]["family"]
    if family not in kind.families:
        problems.append(f"tasks.{task}.models.family: {family!r} is not a {kind.kind} model family; "
                        f"allowed: {', '.join(kind.families)}")
    reduction = deep_merge(cfg["distill"], t.get("distill"))["reduction"]
    if reduction not in kind.reductions:
        problems.append(f"tasks.{task}.distill.reduction: {reduction!r} is not a {kind.kind} reduction; allowed: "
                        f"{', '.join(kind.reductions)} (set tasks.{task}.distill.reduction)")
    own = datasets(kind.kind, t.get("entry"))
    if t["dataset"]["name"] not in own:
        problems.append(f"tasks.{task}.dataset.name: {t['dataset']['name']!r} is not a {kind.kind} dataset; "
                        f"allowed: {', '.join(own)}")
    else:
        problems += distill_switch_problems(cfg, task, kind)
    problems += train_switch_problems(cfg, task, kind)
    return problems


def train_switch_problems(cfg: dict, task: str, kind: TaskInfo) -> list[str]:
    """A train switch (:data:`TRAIN_SWITCHES`) set on a task whose kind does not read it, in the task's
    recipe, its teacher's or a method's."""
    t = cfg["tasks"][task]
    recipes = [("train", deep_merge(cfg["train"], t.get("train"))),
               ("teacher_train", deep_merge(cfg["train"], t.get("train"), t.get("teacher_train")))]
    recipes += [(f"methods.{m}.train", deep_merge(cfg["train"], t.get("train"), o.get("train")))
                for m, o in task_methods(cfg, task).items()]
    return list(dict.fromkeys(
        f"tasks.{task}.{where}.{k}: {r[k]!r} is not read by a {kind.kind} task; leave it at {off!r}"
        for where, r in recipes for k, off in TRAIN_SWITCHES.items()
        if r.get(k, off) != off and k not in kind.train_switches))


def distill_switch_problems(cfg: dict, task: str, kind: TaskInfo) -> list[str]:
    """A distill switch set where it cannot work: on another kind, or teacher views without augmented
    images of a prepared split."""
    t = cfg["tasks"][task]
    distill = deep_merge(cfg["distill"], t.get("distill"))
    problems = [f"tasks.{task}.distill.{k}: {distill[k]!r} is not read by a {kind.kind} task; set "
                f"tasks.{task}.distill.{k}: {off!r}"
                for k, off in DISTILL_SWITCHES.items()
                if distill.get(k, off) != off and k not in kind.distill_switches]
    if distill.get("teacher_views") and not problems:
        if dataset_of(cfg, task).streamed:
            problems.append(f"tasks.{task}.distill.teacher_views: {t['dataset']['name']} is streamed from image "
                            "files; the views are cached for a prepared split only")
        elif not deep_merge(cfg["train"], t.get("train"))["augment"]:
            problems.append(f"tasks.{task}.distill.teacher_views: the students do not augment (train.augment: "
                            "false); cache the teacher on the plain images with distill.cache_teacher instead")
    return problems


def kind_of(cfg: dict, task: str) -> TaskInfo:
    """The description of a task's kind: a built-in one, or the plug-in module its ``entry`` names."""
    t = cfg["tasks"][task]
    return task_info(t["kind"], t.get("entry"))


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


def data_folder(results: str | Path, task: str) -> Path:
    """A task's prepared dataset under ``results/<preset>/``, read by every run of the task."""
    return Path(results) / task / "data"


def data_file(results: str | Path, task: str) -> Path:
    """The manifest of a task's prepared dataset: the data rule's declared output (written last)."""
    return data_folder(results, task) / "manifest.json"


def views_file(k: int | str) -> str:
    """The teacher's logits on ``k`` augmented views of each training image (``distill.teacher_views``,
    ``qd.teacher_views``): a file in the teacher's run folder, written by the workflow's
    ``teacher_views`` rule."""
    return f"teacher_views{k}.pt"


def task_methods(cfg: dict, task: str) -> dict:
    """Method options for ``task``: the global ``methods`` with the task's overrides merged in."""
    overrides = cfg["tasks"][task].get("methods", {})
    return {name: deep_merge(opts, overrides.get(name, {})) for name, opts in cfg["methods"].items()}


def method_options(cfg: dict, task: str, method: str) -> dict:
    """A method's options; the teacher's method ``fp`` needs none, configured or not."""
    return task_methods(cfg, task).get(method, {})


def info(cfg: dict, task: str, method: str) -> MethodInfo:
    return method_info(method, method_options(cfg, task, method))


def _loads_published(cfg: dict, task: str, method: str) -> bool:
    """Whether ``method`` runs the published-weights function (``qd.methods.pretrained``)."""
    opts = method_options(cfg, task, method)
    entry = opts.get("entry") or (BUILTIN[method].entry if method in BUILTIN else None)
    return entry == BUILTIN["pretrained"].entry


def variant_name(bits: int | None, bucket: int | None, granularity: str = "bucket") -> str:
    """``fp32``, ``b<bits>-d<bucket>`` / ``b<bits>-nobucket``, or ``b<bits>-tensor`` / ``b<bits>-channel``
    for a method whose scales cover a whole tensor or output channel."""
    if bits is None:
        return FP_VARIANT
    if granularity != "bucket":
        return f"b{bits}-{granularity}"
    return f"b{bits}-" + ("nobucket" if bucket is None else f"d{bucket}")


def parse_variant(variant: str) -> tuple[int | None, int | None]:
    """``(bits, bucket_size)`` of a variant name; ``(None, None)`` for ``fp32``."""
    if variant == FP_VARIANT:
        return None, None
    m = _VARIANT.match(variant)
    if not m:
        raise ValueError(f"bad variant {variant!r}: expected 'fp32', 'b<bits>-d<bucket>', 'b<bits>-nobucket', "
                         "'b<bits>-tensor' or 'b<bits>-channel'")
    return int(m["bits"]), int(m["bucket"]) if m["bucket"] else None


def method_variants(cfg: dict, task: str, method: str) -> list[str]:
    opts = task_methods(cfg, task)[method]
    if not info(cfg, task, method).quantized:
        return [FP_VARIANT]
    bits = opts.get("bits", cfg["quant"]["bits"])
    granularity = info(cfg, task, method).granularity
    if granularity != "bucket":
        return [variant_name(b, None, granularity) for b in bits]
    buckets = opts.get("buckets", [cfg["quant"]["bucket_size"]])
    return [variant_name(b, d) for b in bits for d in buckets]


def teacher_method(cfg: dict, task: str) -> str:
    """``fp`` (trained by the workflow) or ``pretrained`` (published weights)."""
    return cfg["tasks"][task]["models"]["teacher_method"]


def teacher_run(cfg: dict, task: str) -> RunId:
    return RunId(task, cfg["tasks"][task]["models"]["teacher"], teacher_method(cfg, task), FP_VARIANT,
                 cfg["teacher_seed"])


def is_teacher(cfg: dict, run: RunId) -> bool:
    return run.model == cfg["tasks"][run.task]["models"]["teacher"]


def source_run(cfg: dict, run: RunId) -> RunId | None:
    """The trained student a run starts from (same model and seed), if its method has one."""
    if is_teacher(cfg, run):
        return None
    src = info(cfg, run.task, run.method).source
    return None if src is None else RunId(run.task, run.model, src, FP_VARIANT, run.seed)


def student_methods(cfg: dict, task: str, model: str) -> list[str]:
    """The methods a student runs: all configured ones, or the list ``models.methods.<model>`` gives."""
    methods = list(task_methods(cfg, task))
    only = cfg["tasks"][task]["models"]["methods"].get(model)
    return methods if only is None else [m for m in methods if m in only]


def student_runs(cfg: dict) -> list[RunId]:
    runs = []
    for task, t in cfg["tasks"].items():
        for model in t["models"]["students"]:
            for method in student_methods(cfg, task, model):
                for variant in method_variants(cfg, task, method):
                    runs += [RunId(task, model, method, variant, s) for s in cfg["seeds"]]
    return runs


def planned_runs(cfg: dict) -> list[RunId]:
    """Every run the config asks for: the teachers first, then every student run."""
    return [teacher_run(cfg, t) for t in cfg["tasks"]] + student_runs(cfg)


# ---------------------------------------------------------------- run specs
#
# A run's spec holds only what the run reads, so that the workflow reruns exactly the runs a config
# change affects: a teacher's spec has no bit widths or distillation settings, a PM run's no training
# recipe. What a run reads of other runs (the teacher, a source student) it reads from their files,
# whose changes the workflow tracks on its own.

# The keys of the dataset, distill and evaluation blocks a run reads are its kind's and its dataset's
# facts (qd.tasks: TaskInfo.distill_keys and evaluation_keys, DatasetInfo.keys); the schema fills in
# every key for every task.
# the recipe keys every training run reads, and those only its optimizer or schedule reads
TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "schedule", "grad_clip", "augment", "restarts",
              "epoch_examples", "compile")
SPEED_SWITCHES = {"channels_last": False, "autocast": "off"}  # key: its default
# recipe keys of some task kinds (TaskInfo.train_switches) that enter a training run's spec only when set
# (key: its default), so that the presets that leave them off keep their hashes
TRAIN_SWITCHES = {"loss_reduction": "token_mean"}
# distill keys that enter the spec of a run that reads the task's teacher only when set (key: its
# default), so that the presets that leave them off keep their hashes
DISTILL_SWITCHES = {"teacher_views": 0}  # key: its default (a task kind lists those it reads: TaskInfo)
OPTIMIZER_KEYS = {"sgd": ("lr", "momentum", "nesterov", "weight_decay"), "adam": ("lr", "weight_decay")}
SCHEDULE_KEYS = {"constant": (), "cosine": (), "step": ("milestones", "gamma"),
                 "plateau": ("patience", "cooldown", "stop_patience", "max_halvings", "select_on"),
                 "onmt": ("decay_start", "gamma", "select_on")}


def train_block(train: dict, quantized: bool) -> dict:
    """The recipe keys a training run reads (``threads``, ``device`` and ``processes`` say how it runs,
    not what)."""
    keys = TRAIN_KEYS + OPTIMIZER_KEYS[train["optimizer"]] + SCHEDULE_KEYS[train["schedule"]]
    if quantized and "select_on" in keys:
        keys += ("schedule_reads",)
    block = {k: train[k] for k in keys}
    # switches that change only how fast a run computes enter its spec (and hash) only when set, so the
    # runs of a preset that leaves them off keep their hashes
    switches = {**SPEED_SWITCHES, **TRAIN_SWITCHES}
    block.update({k: train[k] for k, off in switches.items() if train.get(k, off) != off})
    return block


def dataset_of(cfg: dict, task: str):
    """The :class:`qd.tasks.DatasetInfo` of a task's dataset, as its module declares it."""
    t = cfg["tasks"][task]
    return dataset_info(t["dataset"]["name"], t["kind"], t.get("entry"))


def plugin_entry(cfg: dict, task: str) -> dict:
    """``{"task_entry": ...}`` for a task of a plug-in kind, which a job needs to import its adapter;
    empty for a built-in kind, so that built-in specs (and their hashes) stay as they were."""
    t = cfg["tasks"][task]
    return {} if t["kind"] in TASKS and not t.get("entry") else {"task_entry": t["entry"]}


def evaluation_block(cfg: dict, task: str) -> dict:
    """The evaluation keys a run of ``task`` reads (decoding workers only for streamed datasets)."""
    keys = kind_of(cfg, task).evaluation_keys + (("workers",) if dataset_of(cfg, task).streamed else ())
    return {k: cfg["evaluation"][k] for k in keys}


def data_spec(cfg: dict, task: str) -> dict:
    """What the data rule of ``task`` reads: its kind and its dataset's own keys."""
    t = cfg["tasks"][task]
    d = t["dataset"]
    keys = dataset_of(cfg, task).keys
    return {"kind": t["kind"], **plugin_entry(cfg, task), "name": d["name"], **{k: d[k] for k in keys if k in d}}


def _dropout(cfg: dict, task: str, method: str, teacher: bool, own: str | None = None) -> bool:
    setting = own or cfg["tasks"][task]["models"]["dropout"]
    if setting != "auto":
        return setting == "on"
    if teacher or cfg["tasks"][task]["models"]["family"] != "convnet":
        return True
    i = info(cfg, task, method)
    # distilled conv-net students drop dropout (official code); PM/DQ inherit their source student's layout
    uses_teacher = i.needs_teacher or (i.source is not None and info(cfg, task, i.source).needs_teacher)
    return not uses_teacher


def model_spec(cfg: dict, task: str, name: str, dropout: bool) -> dict:
    """A model's spec: its family, name and every size the builder reads."""
    m = cfg["tasks"][task]["models"]
    if m["family"] == "lstm":
        from qd.models.specs import LSTM_SPECS

        base = LSTM_SPECS.get(name)
        arch = {"layers": base.layers, "hidden": base.hidden, "embed": base.embed} if base else {}
        arch.update(m["architectures"].get(name, {}))
        width = m["widths"].get(name, m["width"])
        return {"family": "lstm", "name": name, "layers": arch["layers"],
                "hidden": max(1, round(arch["hidden"] * width)), "embed": max(1, round(arch["embed"] * width)),
                "dropout_rate": m["dropout_rate"] if dropout else 0.0, "init_range": m["init_range"]}
    spec = {"family": m["family"], "name": name, "width": m["widths"].get(name, m["width"]), "dropout": dropout}
    if m["family"] == "convnet":
        spec["logits_relu"] = m["logits_relu"]
    if m["family"] == "wrn":
        spec.update(dropout_rate=m["dropout_rate"], final_bn_momentum=m["final_bn_momentum"])
    return spec


def _with_bits(opts: dict, bits: int | None) -> dict:
    """Method options with the overrides for the run's bit width (``by_bits``) merged in."""
    if bits is None:
        return opts
    return deep_merge(opts, opts.get("by_bits", {}).get(str(bits), opts.get("by_bits", {}).get(bits, {})))


def run_policy(cfg: dict, run: RunId, opts: dict) -> dict:
    """The quantization policy of a run: the method's, else the model's (``quant.by_model``), else global."""
    q = cfg["quant"]
    keys = ("policy", "keep_first_last", "biases", "norm", "embeddings")
    out = {k: q[k] for k in keys}
    out.update({k: v for k, v in q.get("by_model", {}).get(run.model, {}).items() if k in keys})
    if "policy" in opts:
        out["policy"] = opts["policy"]
    return out


def run_spec(cfg: dict, run: RunId) -> dict:
    """Everything one job reads, and nothing else: model, method and its options, and the recipe,
    quantization and distillation blocks only for the methods that use them."""
    t = cfg["tasks"][run.task]
    teacher = is_teacher(cfg, run)
    bits, bucket = parse_variant(run.variant)
    opts = _with_bits(method_options(cfg, run.task, run.method), bits)
    i = info(cfg, run.task, run.method)  # the method resolved once: the spec carries it to the row
    own = {} if teacher else t.get("student_overrides", {}).get(run.model, {})  # this student's recipe
    train = deep_merge(cfg["train"], t.get("train"), own.get("train"),
                       t.get("teacher_train") if teacher else opts.get("train"))
    spec = {
        "preset": cfg["preset"],
        "run": run.path,
        "role": "teacher" if teacher else "student",
        "task": run.task,
        "kind": t["kind"],
        **plugin_entry(cfg, run.task),
        "dataset": t["dataset"]["name"],
        "model": model_spec(cfg, run.task, run.model, _dropout(cfg, run.task, run.method, teacher, own.get("dropout"))),
        "method": {
            "name": run.method, "entry": i.entry, "bits": bits, "bucket_size": bucket,
            "options": {k: v for k, v in opts.items() if k not in GRID_KEYS},
            RESOLVED: {k: getattr(i, k) for k in PROPERTY_KEYS},
        },
        "seed": run.seed,
        "threads": train["threads"],
        "device": train["device"],
        "processes": train["processes"],
        "evaluation": evaluation_block(cfg, run.task),
    }
    if i.trains:
        spec["train"] = train_block(train, i.quantized)
    if i.quantized:
        spec["quant"] = {**run_policy(cfg, run, opts), "rounding": cfg["quant"]["rounding"]}
    if i.distills:
        distill = deep_merge(cfg["distill"], t.get("distill"))
        spec["distill"] = {k: distill[k] for k in kind_of(cfg, run.task).distill_keys}
        if i.needs_teacher:  # the switches cache the task's teacher: a run that distils from itself reads none
            spec["distill"].update({k: distill[k] for k, off in DISTILL_SWITCHES.items() if distill.get(k, off) != off})
    if i.needs_teacher:
        spec["teacher"] = {"run": teacher_run(cfg, run.task).path}
    src = source_run(cfg, run)
    if src is not None:
        spec["source"] = {"run": src.path}
    return spec


# The method's resolved properties (``spec["method"]["info"]``) are left out of a spec's hash: they are
# derived from what is hashed (the method's entry and options), and an override of a label, a grid or a
# granularity changes no training, so it must neither rename the spec file nor rerun the run (nor change
# the config hash of every committed row).
RESOLVED = "info"


def spec_hash(spec: dict) -> str:
    """Short stable hash of a spec (the result row's ``config_hash``, a spec file's name)."""
    if isinstance(spec.get("method"), dict) and RESOLVED in spec["method"]:
        spec = {**spec, "method": {k: v for k, v in spec["method"].items() if k != RESOLVED}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def spec_file(results: str | Path, spec: dict) -> Path:
    """Write ``spec`` to ``<results>/.specs/<hash>.json`` and return the path.

    Named by content, a spec file changes only where its unhashed part (a method's resolved
    properties, e.g. a new label) does: the workflow passes it as a parameter whose value, the path, is
    unchanged, so writing them while the workflow builds its DAG (dry runs included) reruns nothing.
    """
    path = Path(results) / ".specs" / f"{spec_hash(spec)}.json"
    text = json.dumps(spec, indent=1, sort_keys=True) + "\n"
    if not path.exists() or path.read_text() != text:
        from qd.io import atomic_write_text

        atomic_write_text(text, path)
    return path


def results_root(spec_path: str | Path) -> Path:
    """The preset's results folder of a spec file written by :func:`spec_file`."""
    return Path(spec_path).resolve().parent.parent
