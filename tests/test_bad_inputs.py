"""Bad configs are refused before any job starts, naming the key, the bad value and what is allowed;
the exit status is non-zero and no result file is written."""
from __future__ import annotations

import pytest
import yaml

from conftest import qd, snakemake, workflow_copy

BASE = {
    "preset": "bad",
    "tasks": {"digits": {"dataset": {"name": "digits"}, "models": {"teacher": "teacher", "students": ["student1"]}}},
}

CASES = {
    "unknown key": ({"tasks": {"digits": {"train": {"epochz": 3}}}},
                    ["unknown key tasks.digits.train.epochz", "allowed keys: augment, autocast, batch_size"]),
    "bits 0": ({"quant": {"bits": [0, 4]}}, ["quant.bits.0: 0 is less than the minimum of 1"]),
    "bits 17": ({"quant": {"bits": [4, 17]}}, ["quant.bits.1: 17 is greater than the maximum of 16"]),
    "bucket 0": ({"quant": {"bucket_size": 0}}, ["quant.bucket_size: 0 is not valid; expected integer >= 1 or null"]),
    "unknown method": ({"methods": {"fp": {}, "foo": {}}},
                       ["methods.foo: unknown method 'foo'", "built-in methods are fp, distill, pm, qt, qd, dq, pretrained",
                        "methods.foo.entry"]),
    "unknown model": ({"tasks": {"digits": {"models": {"students": ["student9"]}}}},
                      ["tasks.digits.models.students: unknown convnet model 'student9'", "known: teacher, student1"]),
    "unknown dataset": ({"tasks": {"digits": {"dataset": {"name": "svhn"}}}},
                        ["tasks.digits.dataset.name: 'svhn' is not a classification dataset; "
                         "allowed: cifar10, cifar100, digits, imagenet"]),
    "dataset of another kind": ({"tasks": {"digits": {"dataset": {"name": "multi30k"}}}},
                                ["tasks.digits.dataset.name: 'multi30k' is not a classification dataset",
                                 "allowed: cifar10, cifar100, digits, imagenet"]),
    "teacher missing": ({"tasks": {"digits": {"models": {"teacher": None}}}},
                        ["tasks.digits.models: 'teacher' is a required property"]),
    "source method missing": ({"methods": {"pm": {}}},
                              ["methods.pm.source: 'pm' starts from method 'distill', which is not among the "
                               "configured methods (pm)"]),
    "bad reduction": ({"distill": {"reduction": "mean"}},
                      ["tasks.digits.distill.reduction: 'mean' is not a classification reduction; "
                       "allowed: legacy_mean, batchmean"]),
}


def _config(tmp_path, change: dict):
    from qd.config import deep_merge

    cfg = deep_merge(BASE, change)
    models = cfg["tasks"]["digits"]["models"]
    if models.get("teacher", "") is None:
        del models["teacher"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return workflow_copy(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_errors_name_the_key_the_value_and_what_is_allowed(case, tmp_path):
    """Every case through what the workflow runs on its config before any job (``resolve_config`` in
    workflow/rules/common.smk: the preset's values, here none, with the given file's merged on top)."""
    from qd.config import ConfigError, deep_merge, validate, with_base

    change, messages = CASES[case]
    path = _config(tmp_path, change)
    with pytest.raises(ConfigError) as e:
        validate(deep_merge({}, with_base(yaml.safe_load(path.read_text()))), str(path))
    assert f"{path} is invalid" in str(e.value)
    for m in messages:
        assert m in str(e.value)


# end to end, a schema error and a cross-check between sections (each Snakemake start costs ~10 s)
@pytest.mark.parametrize("case", ["unknown key", "source method missing"])
def test_workflow_refuses_bad_config(case, workdir, tmp_path):
    change, messages = CASES[case]
    path = _config(tmp_path, change)
    proc = snakemake(workdir, "--cores", "1", "--configfile", str(path))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"{path} is invalid" in out
    for m in messages:
        assert m in out
    assert not (workdir / "results").exists()


@pytest.mark.parametrize("case", ["bits 17", "unknown method"])
def test_cli_refuses_bad_config(case, tmp_path):
    change, messages = CASES[case]
    path = _config(tmp_path, change)
    proc = qd("train", "--config", str(path), "--model", "student1", "--method", "qd", "--bits", "4",
              "--results", str(tmp_path / "results"))
    assert proc.returncode == 2
    for m in messages:
        assert m in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()
