"""Verdicts of methods, not of trained models: the same reduced demo trained at seed 0 and at seed 1
and reported once per seed gives no claim PASS under one seed and FAIL under the other (a PASS or a
FAIL may become INCONCLUSIVE). With one seed per side the intervals take the run-to-run variance from
the report's stated models (binomial for accuracy, the BLEU calibration or its conservative fallback);
an interval of the two trained models alone flipped 6 of the demo's 24 verdicts between these seeds
(issue 20). Default tier: a few minutes on two cores."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import snakemake, workflow_copy
from qd.config import load_config
from qd.report.build import build_report


@pytest.fixture(scope="module")
def seeds_run(tmp_path_factory):
    root = workflow_copy(tmp_path_factory.mktemp("seeds"))
    proc = snakemake(root, "--cores", "2", "--configfile", "configs/seeds.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def _verdicts(root, seed: int) -> pd.Series:
    cfg = load_config(root / "configs" / "seeds.yaml")
    cfg["seeds"] = [seed]
    results, figures = root / "results" / "seeds", root / "figures" / "seeds"
    build_report(results, figures, cfg, root / "config" / "paper_targets.csv")
    c = pd.read_csv(results / "claims.csv", dtype={"claim": str})
    return c.set_index(["task", "claim"])["verdict"]


def test_no_claim_passes_under_one_seed_and_fails_under_the_other(seeds_run):
    zero, one = _verdicts(seeds_run, 0), _verdicts(seeds_run, 1)
    assert list(zero.index) == list(one.index)
    both = pd.DataFrame({"seed 0": zero, "seed 1": one})
    flips = both[both.apply(lambda r: {r["seed 0"], r["seed 1"]} == {"PASS", "FAIL"}, axis=1)]
    assert flips.empty, f"PASS/FAIL flips between seeds:\n{flips}\nall verdicts:\n{both}"
    # the test means something: the claims were decided (not all NOT TESTED)
    assert both.isin(["PASS", "FAIL"]).any().any(), both
