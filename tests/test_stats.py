"""The paired tests behind every verdict, against textbook cases: McNemar on a hand-computed 2x2
table, the bootstrap interval's coverage of a known difference, and the verdict rule."""
from __future__ import annotations

import math

import numpy as np
import pytest

from qd.report.stats import (FAIL, INCONCLUSIVE, PASS, Interval, clopper_pearson, combine, mcnemar_exact,
                             mcnemar_interval, paired_bleu_bootstrap, paired_bootstrap, paired_difference,
                             seed_bootstrap, verdict)


def _table(both, only_a, only_b, neither):
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, bool)
    return a, b


def test_mcnemar_exact_on_a_hand_computed_table():
    # discordant pairs b = 1 (only A right), c = 6 (only B right): two-sided exact p = 2 P(X <= 1 | 7, 1/2)
    a, b = _table(50, 1, 6, 10)
    assert mcnemar_exact(a, b)[:2] == (1, 6)
    assert mcnemar_exact(a, b)[2] == pytest.approx(2 * (1 + 7) / 2**7)  # 0.125
    # symmetric discordance: p = 1; no discordance at all: p = 1
    assert mcnemar_exact(*_table(5, 3, 3, 5))[2] == pytest.approx(1.0)
    assert mcnemar_exact(*_table(5, 0, 0, 5)) == (0, 0, 1.0)
    # 0 vs 10: p = 2 / 2^10
    assert mcnemar_exact(*_table(0, 0, 10, 0))[2] == pytest.approx(2 / 1024)


def test_mcnemar_interval_by_hand_and_agreeing_with_the_test():
    # 0 vs 5 discordant of 100: pi = share of 'only A right' in [0, 1 - 0.025^(1/5)], difference 5 (2 pi - 1) / 100
    a, b = _table(80, 0, 5, 15)
    iv = mcnemar_interval(a, b)
    assert iv.estimate == pytest.approx(-5.0)
    assert iv.low == pytest.approx(-5.0) and iv.high == pytest.approx(5 * (2 * (1 - 0.025 ** (1 / 5)) - 1))
    assert iv.p_value == pytest.approx(2 / 32)
    # the interval excludes 0 exactly when the exact test rejects at 5%
    for only_a, only_b in [(0, 5), (0, 6), (1, 8), (2, 9), (3, 12), (10, 10), (1, 7)]:
        x, y = _table(50, only_a, only_b, 20)
        iv = mcnemar_interval(x, y)
        assert (iv.high < 0) == (iv.p_value < 0.05), (only_a, only_b)
    same = mcnemar_interval(*_table(30, 0, 0, 5))
    assert same.low == same.high == same.estimate == 0 and verdict(same, 0.0) == FAIL
    # one run each and no run-to-run model: the exact interval of two trained models
    exact = paired_difference(a, b, run_variance="none")
    ref = mcnemar_interval(a, b)
    assert (exact.low, exact.high, exact.p_value) == (ref.low, ref.high, ref.p_value)
    assert "no run-to-run variance" in exact.variances


def test_bootstrap_interval_covers_a_known_difference():
    """Paired data with a true accuracy difference of +5 points: the 95% interval should cover it in
    about 95% of repeated experiments (fixed seed, so the count is exact)."""
    rng = np.random.default_rng(7)
    n, covered, experiments = 400, 0, 200
    for k in range(experiments):
        u = rng.random(n)
        a = u < 0.80  # true accuracy 80%
        b = u < 0.75  # 75%: nested, so each pair differs on the 5% in between
        noise = rng.random(n) < 0.10  # a tenth of the examples answered independently by B
        b = np.where(noise, rng.random(n) < 0.75, b)
        iv = paired_bootstrap(a, b, n_samples=400, seed=k)
        true = 100 * (0.80 - 0.75)
        covered += iv.low <= true <= iv.high
    assert 0.90 <= covered / experiments <= 0.99


def test_bootstrap_is_reproducible_and_centred():
    a, b = _table(300, 30, 10, 60)
    iv1, iv2 = paired_bootstrap(a, b, 500, 3), paired_bootstrap(a, b, 500, 3)
    assert iv1 == iv2
    assert iv1.estimate == pytest.approx(100 * 20 / 400)  # (30 - 10) / 400 examples
    assert iv1.low < iv1.estimate < iv1.high
    assert iv1.p_value < 0.05 and mcnemar_exact(a, b)[2] < 0.05  # bootstrap p-value, as McNemar's
    assert "paired bootstrap" in iv1.test and iv1.n_examples == 400


def test_bootstrap_over_seeds_widens_the_interval():
    rng = np.random.default_rng(0)
    u = rng.random(500)
    one = paired_bootstrap(u < 0.8, u < 0.78, 1000, 0)
    # three seeds of A that disagree with each other: the seed spread must show in the interval
    seeds_a = np.stack([u < 0.8, u < 0.74, u < 0.86])
    many = paired_bootstrap(seeds_a, np.stack([u < 0.78]), 1000, 0)
    assert (many.high - many.low) > (one.high - one.low)
    assert many.seeds_a == 3 and "hierarchical" in many.test and "seeds then examples nested" in many.variances


def test_paired_test_rejects_different_test_sets():
    with pytest.raises(ValueError, match="same test examples"):
        paired_bootstrap(np.ones(10), np.ones(11))


def test_seed_bootstrap_needs_two_seeds_each():
    assert seed_bootstrap([90.0], [80.0, 81.0]) is None
    iv = seed_bootstrap([90.0, 92.0], [80.0, 82.0], 1000, 0)
    assert iv.estimate == pytest.approx(10.0) and 8.0 <= iv.low <= iv.high <= 12.0


def _iv(low, high):
    return Interval((low + high) / 2, low, high, 0.95, 100, 1, 1, "test")


def test_verdict_and_combination_rules():
    assert verdict(_iv(0.5, 2.0), 0.0) == PASS
    assert verdict(_iv(-2.0, -0.5), 0.0) == FAIL
    assert verdict(_iv(-0.5, 2.0), 0.0) == INCONCLUSIVE
    assert verdict(_iv(-1.5, -0.5), -2.0) == PASS  # within a tolerance of 2 points
    assert verdict(None, 0.0) == INCONCLUSIVE
    assert combine([PASS, PASS]) == PASS and combine([PASS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([PASS, FAIL, INCONCLUSIVE]) == FAIL
    assert combine([FAIL, INCONCLUSIVE], "any") == INCONCLUSIVE and combine([FAIL, PASS], "any") == PASS
    assert combine([FAIL, FAIL], "any") == FAIL


def test_clopper_pearson_closed_form_at_zero_successes():
    # with 0 of n, the exact upper bound solves (1 - p)^n = alpha / 2
    low, high = clopper_pearson(0, 20, 0.95)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 20))


def test_paired_bleu_bootstrap_sees_a_better_system():
    refs = [f"the cat number {i} sat on the mat today" for i in range(60)]
    good = list(refs)
    bad = [r.replace("sat on", "was near").replace("today", "") for r in refs]
    iv = paired_bleu_bootstrap([good], [bad], refs, n_samples=200, seed=0)
    assert iv.estimate > 30 and iv.low > 0 and iv.p_value < 0.05
    same = paired_bleu_bootstrap([bad], [bad], refs, n_samples=200, seed=0)
    assert same.estimate == 0 and same.low == same.high == 0
    assert math.isclose(same.p_value, 1.0)
