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


def run_plugin(root, package: str, files: dict[str, str], cfg: dict, timeout: int = 900):
    """Run the workflow copied into ``root`` on ``cfg`` with ``files`` as a package ``package`` of its
    own on PYTHONPATH (what a user's plug-in is: nothing of the suite edited)."""
    folder = root / "plugins" / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    for name, text in files.items():
        (folder / name).write_text(text)
    (root / f"{cfg['preset']}.yaml").write_text(yaml.safe_dump(cfg))
    os.environ["PYTHONPATH"] = f"{root / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    try:
        proc = snakemake(root, "--cores", "2", "--configfile", f"{cfg['preset']}.yaml", timeout=timeout)
    finally:
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root / "results" / cfg["preset"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("method"))
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    # pm's label overridden by the config: the override must reach the rows and the tables
    cfg["methods"] = {"fp": {}, "distill": {}, "pm": {"label": "PM (relabelled)"}, "qd": {}, "dq": {"train": {"epochs": 1}},
                      "absmax_qd": {"entry": "my_methods.absmax_qd:absmax_qd"}}
    cfg["preset"] = "plugin"
    run_plugin(root, "my_methods", {"absmax_qd.py": page_code()}, cfg)
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


def test_method_identity_reaches_the_rows(run):
    results = run / "results" / "plugin"
    df = pd.read_csv(results / "summary.csv")
    dq = df[df["method"] == "dq"]
    # dq's points are learned, not an even grid: its rows say so (claim 5 reads this column)
    assert len(dq) == 1 and not dq["uniform_grid"].astype(bool).any()
    spec = json.loads((results / dq.iloc[0]["run"] / "spec.json").read_text())
    assert spec["method"]["info"]["uniform_grid"] is False and spec["method"]["info"]["source"] == "distill"
    pm = df[df["method"] == "pm"]
    assert set(pm["method_label"]) == {"PM (relabelled)"}
    table = pd.read_csv(results / "tables" / "digits_accuracy.csv", index_col=0)
    assert any(str(i).startswith("PM (relabelled)") for i in table.index), list(table.index)
    assert not any(str(i).startswith("PM quantization") for i in table.index)


def test_qd_compare_prints_the_paired_verdicts(run):
    proc = qd("compare", "--method", "absmax_qd", "--results", str(run / "results" / "plugin"), cwd=run)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(l for l in lines if "vs pm" in l)
    line = next(l for l in lines if "student3" in l)
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in line.split("|")]))
    for baseline in ("pm", "qd", "dq"):  # each baseline's own verdict cell
        assert re.fullmatch(r"(better|worse|within noise) \[[-+]\d+\.\d\d, [-+]\d+\.\d\d\]", cells[f"vs {baseline}"]), cells
    missing = qd("compare", "--method", "nope", "--results", str(run / "results" / "plugin"), cwd=run)
    assert missing.returncode == 1 and "no runs of method 'nope'" in missing.stderr


def test_a_bad_option_is_refused_with_its_key(tmp_path):
    path = tmp_path / "bad.yaml"
    cfg = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    cfg["methods"]["absmax_qd"] = {"entry": "qd.methods.absmax_qd:absmax_qd", "zero_level": "yes"}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="methods.absmax_qd.zero_level: 'yes' is not of type 'boolean'"):
        load_config(path)
