"""Config validation, the run grid and run specs (qd/config.py, qd/methods/registry.py), and the DQ
bit-redistribution heuristic (qd/methods/differentiable_quantization.py; notes 1.8)."""
from __future__ import annotations

import copy
import random

import pytest

from qd.config import (
    ConfigError,
    RunId,
    parse_variant,
    planned_runs,
    run_spec,
    spec_hash,
    student_runs,
    validate,
    variant_name,
)
from qd.methods.registry import BUILTIN, method_info

MINIMAL = {
    "preset": "t",
    "tasks": {"digits": {"dataset": {"name": "digits"},
                         "models": {"teacher": "teacher", "students": ["student1"]}}},
}


def _cfg(**top):
    c = copy.deepcopy(MINIMAL)
    c.update(top)
    return c


def _error(cfg) -> str:
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    return str(e.value)


# ---------------------------------------------------------------- defaults


def test_defaults_filled():
    cfg = validate(MINIMAL)
    assert cfg["quant"]["bucket_size"] == 256
    assert cfg["quant"]["bits"] == [2, 4]
    assert cfg["quant"]["policy"] == "all" and cfg["quant"]["rounding"] == "deterministic"
    assert cfg["distill"] == {"temperature": 2.0, "weight": 0.7, "reduction": "legacy_mean", "mask_padding": True,
                              "cache_teacher": False,
                              "cache_topk": 0, "teacher_views": 0}
    assert list(cfg["methods"]) == ["fp", "distill", "pm", "qt", "qd", "dq"]
    assert cfg["methods"]["pm"] == {"source": "distill", "buckets": [256, None]}
    assert cfg["methods"]["dq"]["init"] == "quantiles" and cfg["methods"]["dq"]["distill_from"] == "self"
    assert cfg["train"]["epochs"] == 200 and cfg["train"]["batch_size"] == 25
    assert cfg["seeds"] == [0] and cfg["teacher_seed"] == 0
    models = cfg["tasks"]["digits"]["models"]
    assert models["family"] == "convnet" and models["width"] == 1.0 and models["dropout"] == "auto"
    # the input is not modified
    assert "quant" not in MINIMAL


def test_explicit_values_kept():
    cfg = validate(_cfg(quant={"bits": [3], "bucket_size": None}, train={"epochs": 7}))
    assert cfg["quant"]["bits"] == [3] and cfg["quant"]["bucket_size"] is None
    assert cfg["train"]["epochs"] == 7 and cfg["train"]["lr"] == 0.001


# ---------------------------------------------------------------- errors


def test_unknown_key_named_with_allowed_keys():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["train"] = {"epochz": 3}
    msg = _error(c)
    assert "unknown key tasks.digits.train.epochz" in msg
    assert "allowed keys:" in msg and "epochs" in msg


def test_unknown_top_level_key():
    msg = _error(_cfg(seedz=[1]))
    assert "unknown key seedz" in msg and "seeds" in msg


@pytest.mark.parametrize("bits,word", [(0, "minimum of 1"), (17, "maximum of 16")])
def test_bits_out_of_range(bits, word):
    msg = _error(_cfg(quant={"bits": [bits]}))
    assert "quant.bits.0" in msg and str(bits) in msg and word in msg


def test_bucket_size_zero():
    msg = _error(_cfg(quant={"bucket_size": 0}))
    assert "quant.bucket_size" in msg and "integer >= 1 or null" in msg


def test_unknown_method_without_entry():
    msg = _error(_cfg(methods={"foo": {}}))
    assert "methods.foo" in msg and "unknown method 'foo'" in msg
    assert "fp, distill, pm, qt, qd, dq" in msg and "entry" in msg


def test_custom_method_with_entry_accepted():
    entry = "qd.methods.baselines:distilled"  # any importable function; its module declares nothing
    cfg = validate(_cfg(methods={"mine": {"entry": entry, "quantized": True, "needs_teacher": True}}))
    runs = planned_runs(cfg)
    assert [r.variant for r in runs if r.method == "mine"] == ["b2-d256", "b4-d256"]
    spec = run_spec(cfg, runs[-1])
    assert spec["method"]["entry"] == entry and spec["teacher"]["run"] == "digits/teacher/fp/fp32/seed0"
    msg = _error(_cfg(methods={"mine": {"entry": "no_such_pkg.mod:fn"}}))
    assert "methods.mine.entry: cannot import 'no_such_pkg.mod'" in msg


def test_plugin_declares_its_properties_and_options():
    lsq = "qd.methods.lsq:lsq"
    cfg = validate(_cfg(methods={"fp": {}, "distill": {}, "lsq": {"entry": lsq},
                                 "lsq_t": {"entry": lsq, "step_granularity": "tensor", "use_distillation": False},
                                 "pcq": {"entry": "qd.methods.per_channel_qat:per_channel_qat"}}))
    variants = {(r.method, r.variant) for r in planned_runs(cfg) if r.method in ("lsq", "lsq_t", "pcq")}
    assert variants == {("lsq", "b2-d256"), ("lsq", "b4-d256"), ("lsq_t", "b2-tensor"), ("lsq_t", "b4-tensor"),
                        ("pcq", "b2-channel"), ("pcq", "b4-channel")}
    spec = run_spec(cfg, RunId("digits", "student1", "lsq_t", "b2-tensor", 0))
    assert spec["method"]["options"] == {"use_distillation": False, "step_granularity": "tensor", "symmetric": True,
                                         "implementation": "torch", "step_lr": None}  # defaults filled in
    assert "teacher" not in spec and "distill" not in spec and spec["source"]["run"].endswith("distill/fp32/seed0")
    assert "teacher" in run_spec(cfg, RunId("digits", "student1", "lsq", "b2-d256", 0))
    assert parse_variant("b2-tensor") == (2, None) and parse_variant("b4-channel") == (4, None)
    msg = _error(_cfg(methods={"lsq": {"entry": lsq, "step_granularity": "row", "stepz": 1}}))
    assert "methods.lsq.step_granularity: 'row' is not allowed; allowed values: 'bucket', 'tensor', 'channel'" in msg
    assert "unknown key methods.lsq.stepz; allowed keys: implementation, step_granularity" in msg


def test_unknown_model():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["models"]["students"] = ["student1", "nope"]
    msg = _error(c)
    assert "tasks.digits.models.students" in msg and "'nope'" in msg
    assert "teacher, student1, student2, student3, deeper" in msg


def test_unknown_dataset():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["dataset"]["name"] = "mnist"
    msg = _error(c)
    assert "tasks.digits.dataset.name: 'mnist' is not a classification dataset; allowed: cifar10, cifar100, digits, imagenet" in msg


def test_bad_reduction():
    msg = _error(_cfg(distill={"reduction": "foo"}))
    assert ("tasks.digits.distill.reduction: 'foo' is not a classification reduction; "
            "allowed: legacy_mean, batchmean") in msg


def test_missing_source_method():
    msg = _error(_cfg(methods={"pm": {}}))  # pm starts from distill, which is not configured
    assert "methods.pm.source" in msg and "'distill'" in msg


def test_teacher_also_student():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["models"]["students"] = ["teacher"]
    assert "cannot also be a student" in _error(c)


def test_several_problems_listed():
    c = _cfg(quant={"bits": [0]}, distill={"reduction": "foo"})
    err = pytest.raises(ConfigError, validate, c).value
    assert len(err.problems) == 2


# ---------------------------------------------------------------- run grid


def test_planned_runs_count_by_hand():
    # 1 teacher + per student: fp 1, distill 1, pm 2 bits x 2 buckets = 4, qt 2, qd 2, dq 2 -> 12
    cfg = validate(_cfg(quant={"bits": [2, 4]}))
    runs = planned_runs(cfg)
    assert len(runs) == 1 + 12
    assert runs[0] == RunId("digits", "teacher", "fp", "fp32", 0)
    by_method = {}
    for r in runs[1:]:
        by_method.setdefault(r.method, []).append(r.variant)
    assert by_method == {
        "fp": ["fp32"], "distill": ["fp32"],
        "pm": ["b2-d256", "b2-nobucket", "b4-d256", "b4-nobucket"],
        "qt": ["b2-d256", "b4-d256"], "qd": ["b2-d256", "b4-d256"], "dq": ["b2-d256", "b4-d256"],
    }
    # two students and three seeds: 1 teacher + 2 * 3 * 12
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["models"]["students"] = ["student1", "student2"]
    c["seeds"] = [0, 1, 2]
    cfg2 = validate(c)
    assert len(planned_runs(cfg2)) == 1 + 72 and len(student_runs(cfg2)) == 72
    assert len(set(planned_runs(cfg2))) == 73


def test_method_bits_override():
    c = _cfg(methods={"fp": {}, "distill": {}, "qd": {"bits": [8]}})
    runs = planned_runs(validate(c))
    assert [r.variant for r in runs if r.method == "qd"] == ["b8-d256"]
    assert len(runs) == 1 + 3


@pytest.mark.parametrize("name,parsed", [("b4-d256", (4, 256)), ("b2-nobucket", (2, None)), ("fp32", (None, None)),
                                         ("b16-d1", (16, 1))])
def test_variant_round_trip(name, parsed):
    assert parse_variant(name) == parsed
    assert variant_name(*parsed) == name


@pytest.mark.parametrize("bad", ["b4", "4-d256", "b4-d", "b4-dx", "fp16", "b4-d256x", "B4-d256", ""])
def test_bad_variant(bad):
    with pytest.raises(ValueError, match="bad variant"):
        parse_variant(bad)


def test_run_id_path():
    r = RunId("digits", "student1", "qd", "b2-d256", 3)
    assert r.path == "digits/student1/qd/b2-d256/seed3"


# ---------------------------------------------------------------- run specs


def _run(cfg, method, variant):
    return next(r for r in planned_runs(cfg) if r.method == method and r.variant == variant)


def test_run_spec_qd():
    cfg = validate(MINIMAL)
    spec = run_spec(cfg, _run(cfg, "qd", "b2-d256"))
    assert spec["run"] == "digits/student1/qd/b2-d256/seed0"
    assert spec["method"]["bits"] == 2 and spec["method"]["bucket_size"] == 256
    assert spec["teacher"] == {"run": "digits/teacher/fp/fp32/seed0"}  # the rest is read from its artefact
    assert spec["model"]["dropout"] is False  # distilled students drop dropout (auto)
    assert spec["distill"]["reduction"] == "legacy_mean" and spec["train"]["epochs"] == 200
    assert spec["quant"]["policy"] == "all" and "bits" not in spec["quant"] and "bucket_size" not in spec["quant"]


def test_run_spec_pm_starts_from_distilled_student_and_has_no_recipe():
    cfg = validate(MINIMAL)
    spec = run_spec(cfg, _run(cfg, "pm", "b4-nobucket"))
    assert spec["source"] == {"run": "digits/student1/distill/fp32/seed0"}
    assert "teacher" not in spec and "train" not in spec and "distill" not in spec
    assert spec["method"]["bits"] == 4 and spec["method"]["bucket_size"] is None
    assert spec["model"]["dropout"] is False  # its source is distilled
    assert spec["method"]["options"] == {}  # buckets and source are the run grid's, not the method's


def test_teacher_spec_holds_only_what_a_teacher_reads():
    cfg = validate(_cfg(methods={"distill": {}, "qd": {}}))  # no fp among the methods: the teacher still trains
    teacher = run_spec(cfg, planned_runs(cfg)[0])
    assert teacher["role"] == "teacher" and teacher["method"]["name"] == "fp"
    assert set(teacher) == {"preset", "run", "role", "task", "kind", "dataset", "model", "method", "seed",
                            "threads", "device", "processes", "evaluation", "train"}
    # the plateau schedule's keys, the optimizer's, no quantization or distillation
    assert set(teacher["train"]) == {"epochs", "batch_size", "optimizer", "schedule", "grad_clip", "augment",
                                     "restarts", "epoch_examples", "compile", "lr", "momentum", "nesterov", "weight_decay", "patience",
                                     "cooldown", "stop_patience", "max_halvings", "select_on"}
    assert teacher["model"]["dropout"] is True


def test_train_block_follows_optimizer_and_schedule():
    c = copy.deepcopy(MINIMAL)
    c["train"] = {"optimizer": "adam", "schedule": "cosine"}
    cfg = validate(c)
    fp = run_spec(cfg, _run(cfg, "fp", "fp32"))
    assert set(fp["train"]) == {"epochs", "batch_size", "optimizer", "schedule", "grad_clip", "augment", "restarts",
                                "epoch_examples", "compile", "lr", "weight_decay"}
    assert fp["model"]["dropout"] is True and fp["method"]["bits"] is None and "teacher" not in fp


def test_run_spec_dropout_forced():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["models"]["dropout"] = "on"
    cfg = validate(c)
    assert run_spec(cfg, _run(cfg, "qd", "b2-d256"))["model"]["dropout"] is True


def test_dq_reads_the_teacher_only_when_distilling_from_it():
    cfg = validate(MINIMAL)
    spec = run_spec(cfg, _run(cfg, "dq", "b2-d256"))
    assert "teacher" not in spec and "distill" in spec  # distilled toward its own fp version (official code)
    cfg2 = validate(_cfg(methods={"fp": {}, "distill": {}, "dq": {"distill_from": "teacher"}}))
    assert "teacher" in run_spec(cfg2, _run(cfg2, "dq", "b2-d256"))
    cfg3 = validate(_cfg(methods={"fp": {}, "distill": {}, "dq": {"use_distillation": False}}))
    assert "distill" not in run_spec(cfg3, _run(cfg3, "dq", "b2-d256"))


def test_options_per_bit_width_and_policy_per_model():
    c = copy.deepcopy(MINIMAL)
    c["tasks"]["digits"]["models"]["students"] = ["student1", "deeper"]
    c["methods"] = {"fp": {}, "distill": {}, "dq": {"by_bits": {"2": {"train": {"epochs": 20}}},
                                                    "train": {"epochs": 10}}, "pm": {"policy": "modules"}, "qd": {}}
    c["quant"] = {"by_model": {"deeper": {"policy": "paper_index"}}}
    cfg = validate(c)
    assert run_spec(cfg, _run(cfg, "dq", "b2-d256"))["train"]["epochs"] == 20
    assert run_spec(cfg, _run(cfg, "dq", "b4-d256"))["train"]["epochs"] == 10
    deeper = RunId("digits", "deeper", "qd", "b4-d256", 0)
    assert run_spec(cfg, deeper)["quant"]["policy"] == "paper_index"
    assert run_spec(cfg, _run(cfg, "qd", "b4-d256"))["quant"]["policy"] == "all"
    assert run_spec(cfg, RunId("digits", "deeper", "pm", "b4-d256", 0))["quant"]["policy"] == "modules"


def test_spec_hash_stable_and_sensitive():
    cfg = validate(MINIMAL)
    run = _run(cfg, "qd", "b4-d256")
    spec = run_spec(cfg, run)
    h = spec_hash(spec)
    assert len(h) == 12 and all(ch in "0123456789abcdef" for ch in h)
    assert spec_hash(run_spec(validate(MINIMAL), run)) == h  # same config -> same hash
    reordered = dict(reversed(list(spec.items())))
    assert spec_hash(reordered) == h  # key order does not matter
    changed = copy.deepcopy(spec)
    changed["train"]["lr"] = 0.002
    assert spec_hash(changed) != h
    assert spec_hash(run_spec(cfg, RunId(run.task, run.model, run.method, run.variant, 1))) != h
    assert spec_hash(run_spec(validate(_cfg(distill={"temperature": 1.0})), run)) != h


def test_spec_changes_reach_exactly_the_runs_that_read_the_key():
    """Which runs' specs a config change alters (the workflow reruns exactly those)."""
    base = validate(MINIMAL)

    def changed(other):
        cfg = validate(other)
        return sorted(r.path for r in planned_runs(base) if r in planned_runs(cfg)
                      and spec_hash(run_spec(base, r)) != spec_hash(run_spec(cfg, r)))

    touched = changed(_cfg(distill={"temperature": 1.0}))
    assert touched == ["digits/student1/distill/fp32/seed0", "digits/student1/dq/b2-d256/seed0",
                       "digits/student1/dq/b4-d256/seed0", "digits/student1/qd/b2-d256/seed0",
                       "digits/student1/qd/b4-d256/seed0"]  # pm and dq follow distill through its file
    assert changed(_cfg(quant={"bits": [2, 4, 8]})) == []  # new runs only
    assert changed(_cfg(evaluation={"latency": {"repeats": 3}})) == []  # timing is another job's
    assert changed(_cfg(quant={"rounding": "stochastic"})) == sorted(
        r.path for r in planned_runs(base) if r.variant != "fp32")


# ---------------------------------------------------------------- registry


def test_registry():
    assert list(BUILTIN) == ["fp", "distill", "pm", "qt", "qd", "dq", "pretrained"]
    assert method_info("pm", {}).source == "distill"
    assert method_info("qd", {}).needs_teacher and not method_info("qt", {}).needs_teacher
    assert method_info("dq", {"use_distillation": False, "distill_from": "teacher"}).needs_teacher is False
    with pytest.raises(KeyError):
        method_info("custom", {})
    custom = method_info("custom", {"entry": "qd.methods.baselines:distilled", "quantized": True})
    assert custom.quantized and not custom.needs_teacher and custom.source is None
    assert custom.trains and not custom.distills
    assert not method_info("pm", {}).trains and method_info("qd", {}).distills


# ---------------------------------------------------------------- DQ point redistribution


def _redistribute():
    from qd.methods.differentiable_quantization import redistribute_points

    return redistribute_points


def test_redistribute_hand_cases():
    rp = _redistribute()
    # base [2,2,2], rest 6, shares [.25,.25,.5] -> 2+round(1.5)=4 (half to even), 4, 2+3=5: sum 13,
    # surplus 1 taken from the largest -> [4, 4, 4]
    assert rp([4, 4, 4], [1, 1, 2]) == [4, 4, 4]
    # all the rest to the only tensor with a gradient: [2+6, 2, 2]
    assert rp([4, 4, 4], [1, 0, 0]) == [8, 2, 2]
    # base [2,2,2,2], rest 8, shares 1/3: 2+round(2.67)=5 x3, 2+0 -> sum 17, surplus 1 off the first largest
    assert rp([4, 4, 4, 4], [1, 1, 1, 0]) == [4, 5, 5, 2]
    # base [2,2,2], rest 13-6=7, shares 1/3: 2+round(2.33)=4 x3 -> 12, shortfall 1 to the first smallest
    assert rp([4, 4, 5], [1, 1, 1]) == [5, 4, 4]
    # 16-point budgets, norms 1:3 -> base 8, 8; rest 16: 8+4=12, 8+12=20
    assert rp([16, 16], [1, 3]) == [12, 20]


def test_redistribute_zero_norms_even_split():
    rp = _redistribute()
    assert rp([4, 4, 4], [0, 0, 0]) == [4, 4, 4]
    # base [1,2,4], rest 7, shares 1/3 -> 2 each: [3,4,6] = 13, shortfall 1 to the smallest -> [4,4,6]
    assert rp([2, 4, 8], [0.0, 0.0, 0.0]) == [4, 4, 6]


def test_redistribute_preserves_total_random():
    rp = _redistribute()
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 12)
        budgets = [2 ** rng.randint(1, 8) for _ in range(n)]
        norms = [rng.random() ** 3 * rng.choice([1e-4, 1.0, 1e3]) for _ in range(n)]
        alloc = rp(budgets, norms)
        assert sum(alloc) == sum(budgets)
        assert len(alloc) == n and all(isinstance(a, int) and a >= 1 for a in alloc)
        # every tensor keeps about half its budget (rounding fix-ups move at most n/2 points)
        assert all(a >= b // 2 - n for a, b in zip(alloc, budgets))


def test_redistribute_proportional_when_exact():
    rp = _redistribute()
    # base 16 each, rest 96 - 48 = 48 split 1:2:5 exactly -> 6, 12, 30
    assert rp([32, 32, 32], [1, 2, 5]) == [22, 28, 46]
    # scaling all norms by a constant changes nothing
    assert rp([32, 32, 32], [0.5, 1.0, 2.5]) == [22, 28, 46]


def test_initial_points():
    import torch

    from qd.methods.differentiable_quantization import initial_points
    from qd.quant import quantile_points

    w = torch.randn(100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(initial_points(w, 5, "quantiles", 32), quantile_points(w, 5, 32))
    u = initial_points(w, 5, "uniform", 32)
    assert u.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0] and u.dtype == torch.float64
    with pytest.raises(ValueError, match="init"):
        initial_points(w, 5, "kmeans", 32)
