# Config resolution and validation, the run grid, and the helpers rules use to wire inputs.
# No configfile directive: the config is the preset named by `preset` (config/config.yaml for the
# demo, config/presets/<preset>.yaml otherwise) with --config/--configfile values merged on top,
# so `--config preset=cifar10` never mixes the demo's tasks into another preset.
import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from qd.config import (ConfigError, RunId, data_file, deep_merge, info, planned_runs, preset_file, read_yaml,
                       run_spec, source_run, teacher_run, validate, with_base)


def resolve_config(given):
    """The preset `given` names (demo by default) with the given values merged on top, validated."""
    name = given.get("preset", "demo")
    given_files = [str(f) for f in workflow.configfiles]
    source = ", ".join(given_files) if given_files else str(preset_file(name))
    try:
        base = with_base(read_yaml(preset_file(name))) if preset_file(name).exists() else {}
        return validate(deep_merge(base, with_base(dict(given))), source)
    except ConfigError as e:
        sys.exit(f"qd-repro: {e}")


CFG = resolve_config(config)
PRESET = CFG["preset"]
RESULTS = f"results/{PRESET}"
FIGURES = f"figures/{PRESET}"
RUNS = planned_runs(CFG)
RUN_DIR = RESULTS + "/{task}/{model}/{method}/{variant}/seed{seed}"
TEACHERS = sorted({t["models"]["teacher"] for t in CFG["tasks"].values()})
STUDENTS = sorted({s for t in CFG["tasks"].values() for s in t["models"]["students"]})


wildcard_constraints:
    task="|".join(CFG["tasks"]),
    method="|".join(CFG["methods"]),
    variant=r"fp32|b\d+-(d\d+|nobucket)",
    seed=r"\d+",


def run_of(w):
    return RunId(w.task, w.model, w.method, w.variant, int(w.seed))


def spec_json(w):
    return json.dumps(run_spec(CFG, run_of(w)), sort_keys=True)


def run_files(run, name="metrics.json"):
    return f"{RESULTS}/{run.path}/{name}"


def student_inputs(w):
    """The data, and the finished teacher and source runs a student run reads."""
    run = run_of(w)
    inputs = {"data": str(data_file(RESULTS, w.task))}
    if info(CFG, w.task, w.method).needs_teacher:
        inputs["teacher"] = run_files(teacher_run(CFG, w.task), "model.qda")
    src = source_run(CFG, run)
    if src is not None:
        inputs["source"] = run_files(src, "model.qda")
    return inputs


def folder_args(input):
    """--teacher/--source folder arguments for `qd train` from a rule's inputs."""
    args = []
    for role in ("teacher", "source"):
        if role in input.keys():
            args.append(f"--{role} {Path(input[role]).parent}")
    return " ".join(args)
