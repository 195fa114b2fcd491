"""docs/adding-a-method.md as written: its method file, copied into a package of the test's own and
listed in a tiny config, runs through the workflow next to the paper's methods, shows up in the
summary, the tables and `qd compare`; and bad options are refused with the key named."""
from __future__ import annotations

import json
import os
import re

import pandas as pd
import pytest
import yaml

from conftest import ROOT, env, qd, snakemake, workflow_copy
from qd.config import ConfigError, load_config

PAGE = ROOT / "docs" / "adding-a-method.md"


def page_code() -> str:
    return re.search(r"```python\n(.*?)```", PAGE.read_text(), re.S).group(1)


def test_the_page_shows_the_shipped_file():
    assert page_code() == (ROOT / "qd" / "methods" / "absmax_qd.py").read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("method"))
    package = root / "plugins" / "my_methods"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "absmax_qd.py").write_text(page_code())
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["methods"] = {"fp": {}, "distill": {}, "pm": {}, "qd": {}, "dq": {"train": {"epochs": 1}},
                      "absmax_qd": {"entry": "my_methods.absmax_qd:absmax_qd"}}
    cfg["preset"] = "plugin"
    (root / "plugin.yaml").write_text(yaml.safe_dump(cfg))
    os.environ["PYTHONPATH"] = f"{root / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        proc = snakemake(root, "--cores", "2", "--configfile", "plugin.yaml", timeout=900)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root


def test_the_new_method_runs_beside_the_paper_methods(run):
    results = run / "results" / "plugin"
    df = pd.read_csv(results / "summary.csv")
    row = df[df["method"] == "absmax_qd"].iloc[0]
    assert (row["bits"], row["bucket"], row["method_label"]) == (2, 256, "QD (absmax scaling)")
    assert bool(row["uniform_grid"]) and 0 <= row["accuracy"] <= 100
    assert row["size_analytic"] < row["size_fp32"]
    spec = json.loads((run / "results" / "plugin" / row["run"] / "spec.json").read_text())
    assert spec["method"]["options"] == {"zero_level": True}  # its option's default, filled in
    table = pd.read_csv(results / "tables" / "digits_accuracy.csv", index_col=0)
    assert "QD (absmax scaling)" in table.index
    compare = (results / "tables" / "digits_compare.md").read_text()
    assert "absmax_qd against the paper's baselines" in compare


def test_qd_compare_prints_the_paired_verdicts(run):
    proc = qd("compare", "--method", "absmax_qd", "--results", str(run / "results" / "plugin"), cwd=run)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if "student3" in l)
    for baseline in ("pm", "qd", "dq"):
        assert re.search(r"(better|worse|within noise) \[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]", line), line
    missing = qd("compare", "--method", "nope", "--results", str(run / "results" / "plugin"), cwd=run)
    assert missing.returncode == 1 and "no runs of method 'nope'" in missing.stderr


def test_a_bad_option_is_refused_with_its_key(tmp_path):
    path = tmp_path / "bad.yaml"
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["methods"]["absmax_qd"] = {"entry": "qd.methods.absmax_qd:absmax_qd", "zero_level": "yes"}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="methods.absmax_qd.zero_level: 'yes' is not of type 'boolean'"):
        load_config(path)
