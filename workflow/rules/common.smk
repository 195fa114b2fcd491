# Config resolution and validation, the run grid, each job's spec file, and the helpers rules use to
# wire inputs. No configfile directive: the config is the preset named by `preset` (config/config.yaml
# for the demo, config/presets/<preset>.yaml otherwise) with --config/--configfile values merged on top,
# so `--config preset=cifar10` never mixes the demo's tasks into another preset.
#
# Every job reads one spec file, results/<preset>/.specs/<hash>.json, holding exactly what it reads
# (qd.config.run_spec): a config change reruns the jobs whose spec changed and no others. The files
# are named by their content, so writing them here (dry runs included) changes nothing a job reads.
import re
import shlex
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
import yaml

from qd.config import (VARIANT_PATTERN, ConfigError, RunId, data_file, data_spec, deep_merge, kind_of, planned_runs,
                       preset_file, read_yaml, run_spec, source_run, spec_file, spec_hash, teacher_run, validate,
                       views_file, with_base)
from qd.io import atomic_write_text


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
SPECS = {run: run_spec(CFG, run) for run in RUNS}
SPEC_FILES = {run: str(spec_file(RESULTS, spec)) for run, spec in SPECS.items()}


def config_file(results, cfg):
    """The resolved config for the jobs that read all of it (`qd latency`, `qd report`), named by its
    content as the specs are. Written as YAML, the format `--config` reads: PyYAML reads a JSON number
    such as 1e-06 (the cifar10 preset's DQ learning rate) as a string, since its floats need a dot."""
    path = Path(results) / ".specs" / f"{spec_hash(cfg)}.yaml"
    text = yaml.safe_dump(cfg, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(text, path)
    return str(path)


CONFIG_FILE = config_file(RESULTS, CFG)
DATA_SPEC_FILES = {task: str(spec_file(RESULTS, data_spec(CFG, task))) for task in CFG["tasks"]}


def alternatives(names):
    """A wildcard constraint matching exactly these names (escaped: a method may be called `a.b`)."""
    return "|".join(re.escape(n) for n in sorted(names))


wildcard_constraints:
    task=alternatives(CFG["tasks"]),
    method=alternatives(set(CFG["methods"]) | {t["models"]["teacher_method"] for t in CFG["tasks"].values()}),
    variant=VARIANT_PATTERN,
    seed=r"\d+",


def run_of(w):
    return RunId(w.task, w.model, w.method, w.variant, int(w.seed))


def run_files(run, name="metrics.json"):
    return f"{RESULTS}/{run.path}/{name}"


def run_inputs(w):
    """The spec, the data and the finished teacher and source runs a run reads (and the teacher's
    cached views, which the run finds beside the teacher's model)."""
    run = run_of(w)
    spec = SPECS[run]
    inputs = {"data": str(data_file(RESULTS, w.task))}
    if "teacher" in spec:
        inputs["teacher"] = run_files(teacher_run(CFG, w.task), "model.qda")
    views = spec.get("distill", {}).get("teacher_views")
    if views:
        inputs["views"] = run_files(teacher_run(CFG, w.task), views_file(views))
    if "source" in spec:
        inputs["source"] = run_files(source_run(CFG, run), "model.qda")
    return inputs


def run_threads(w):
    """The threads the job uses (its spec's, per process), so the scheduler reserves exactly those."""
    spec = SPECS[run_of(w)]
    return spec["threads"] * spec["processes"]


def run_gpus(w):
    """GPUs a training job takes: one per process (none for a run on the CPU)."""
    spec = SPECS[run_of(w)]
    return 0 if spec["device"] == "cpu" else spec["processes"]


def run_launcher(w):
    """`qd`, or torchrun with one process per GPU for a run of several processes (DDP)."""
    n = SPECS[run_of(w)]["processes"]
    return "qd" if n == 1 else f"torchrun --standalone --nproc-per-node {n} -m qd.cli"


# ---- warm start (qd/prefork.py): on this machine, one process imports torch once and forks every job.
# Only for local execution: a cluster job runs on its own node and imports for itself. QD_NO_PREFORK=1
# turns it off (every job then starts its own Python, as on a cluster).
#
# What torch imports on first use in every training job: a torch.optim optimizer's constructor imports
# torch._dynamo (about 1 s of CPU, more than a small run trains), so the server imports it once for all.
LAZY_IMPORTS = ("torch._dynamo",)
# What an ONNX job (evaluation.onnx) imports: qd.onnx with onnx, onnxruntime and onnxscript, then what
# torch.onnx.export loads on first use. Loaded once, they take an export from about 3.3 s to 1.5 s.
ONNX_IMPORTS = ("qd.onnx.run", "torch.onnx._internal.exporter._compat", "torch.onnx._internal.exporter._torchlib.ops",
                "torch.export._trace", "torch.export._patches", "torch._export.passes.replace_set_grad_with_hop_pass",
                "torch._export.passes._node_metadata_hook",
                "torch._export.passes.replace_autocast_with_hop_pass", "torch._inductor.sizevars",
                "torch._inductor.compiler_bisector", "torch._inductor.fx_passes.dedupe_symint_uses",
                "torch._functorch._aot_autograd.subclass_parametrization", "torch._subclasses.schema_check_mode",
                "torch.fx.experimental.validator", "onnxscript._framework_apis.torch_2_11",
                "onnxscript.function_libs.torch_lib.ops", "onnxscript.rewriter.onnx_fusions", "sympy.combinatorics",
                "sympy.tensor.tensor")


def start_prefork():
    import os
    import tempfile

    from qd.prefork import ENV, start

    if not workflow.local_exec or os.environ.get("QD_NO_PREFORK"):
        return
    path = os.path.join(tempfile.gettempdir(), f"qd-prefork-{os.getuid()}-{os.getpid()}.sock")
    adapters = {kind_of(CFG, t).entry.partition(":")[0] for t in CFG["tasks"]}
    onnx = ONNX_IMPORTS if CFG["evaluation"]["onnx"]["enabled"] else ()
    start(path, os.getpid(), preload=tuple(sorted(adapters)) + LAZY_IMPORTS + onnx)
    os.environ[ENV] = path


def stop_prefork():
    import os

    from qd.prefork import ENV, stop

    if os.environ.get(ENV):
        stop(os.environ.pop(ENV))
