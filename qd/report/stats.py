"""Paired comparisons of two methods on the same test examples, and the verdict they support.

Two runs evaluated on one test set are compared example by example, never by their two accuracies
alone: the difference of two accuracies of 90% on 359 examples moves by about 2 points when a handful
of images flips, while a paired test sees that most examples are answered alike by both.

* :func:`mcnemar_exact`: McNemar's exact test on the discordant examples of one run of each method,
  and :func:`mcnemar_interval`, the exact interval of the difference that agrees with it;
* :func:`paired_bootstrap`: percentile interval of the accuracy difference, resampling the test
  examples (the same draw for both methods) and, where a method has several seeds, its seeds
  (:func:`paired_difference` picks between the two);
* :func:`paired_bleu_bootstrap`: the same for corpus BLEU, resampling sentences' sufficient
  statistics as sacreBLEU's paired bootstrap does (Koehn 2004);
* :func:`verdict`: PASS when the whole interval clears the claim's threshold, FAIL when the whole
  interval misses it, INCONCLUSIVE when the threshold lies inside (the data cannot tell).

Try: ``pytest tests/test_stats.py``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
# bootstrap draws made at once: bounds memory at chunk x n_examples indices
_CHUNK = 256


@dataclass(frozen=True)
class Interval:
    """A difference ``A - B`` (points of the metric), its interval and what it rests on."""

    estimate: float
    low: float
    high: float
    confidence: float
    n_examples: int
    seeds_a: int
    seeds_b: int
    test: str  # how the interval was obtained
    p_value: float | None = None  # McNemar exact (classification) or paired bootstrap (BLEU)

    def describe(self, digits: int = 2) -> str:
        p = "" if self.p_value is None else f", p = {self.p_value:.3g}"
        return (f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({self.confidence:.0%} {self.test}{p})")


def verdict(interval: Interval | None, threshold: float) -> str:
    """PASS when ``A - B > threshold`` for the whole interval, FAIL when ``A - B < threshold`` for all
    of it, or when the interval is the single point ``threshold`` (two models that answer every example
    alike do not improve on each other); INCONCLUSIVE otherwise (or without an interval)."""
    if interval is None:
        return INCONCLUSIVE
    if interval.low > threshold:
        return PASS
    if interval.high < threshold or interval.low == interval.high == threshold:
        return FAIL
    return INCONCLUSIVE


def combine(verdicts: Sequence[str], rule: str = "all") -> str:
    """One verdict from several cells: ``all`` must hold (any FAIL fails) or ``any`` may (any PASS passes)."""
    v = list(verdicts)
    if not v:
        return INCONCLUSIVE
    if rule == "all":
        return FAIL if FAIL in v else (PASS if all(x == PASS for x in v) else INCONCLUSIVE)
    if rule == "any":
        return PASS if PASS in v else (FAIL if all(x == FAIL for x in v) else INCONCLUSIVE)
    raise ValueError(f"unknown rule {rule!r}; known: all, any")


def binomial_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair trials: ``2 P(X <= min(k, n - k))``,
    capped at 1 (the binomial CDF as a regularised incomplete beta function)."""
    from scipy.special import betainc

    if n == 0:
        return 1.0
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    return float(min(1.0, 2 * betainc(n - m, m + 1, 0.5)))


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """``(b, c, p)``: examples only A gets right, only B gets right, and the two-sided exact p-value
    (binomial test of ``b`` out of ``b + c`` at 1/2; 1 when no example is discordant)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError(f"McNemar needs the same test examples: shapes {a.shape} and {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    return b, c, binomial_two_sided_half(b, b + c)


def mcnemar_interval(correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95,
                     scale: float = 100.0) -> Interval:
    """Exact interval of the accuracy difference of one run each, given its ``m = b + c`` discordant
    examples: ``b`` (only A right) is Binomial(m, pi), the difference is ``m (2 pi - 1) / n``, and pi's
    Clopper-Pearson interval gives the difference's. It excludes 0 exactly when McNemar's exact test
    rejects at ``1 - confidence``, so verdict and p-value never disagree (a percentile bootstrap does
    on a handful of discordant examples)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n = a.size
    if n == 0:
        raise ValueError("a paired test needs at least one test example")
    b, c, p = mcnemar_exact(a, b_)
    m = b + c
    lo, hi = clopper_pearson(b, m, confidence) if m else (0.5, 0.5)
    est = scale * (b - c) / n
    return Interval(est, scale * m * (2 * lo - 1) / n, scale * m * (2 * hi - 1) / n, confidence, n, 1, 1,
                    f"McNemar exact interval over {n} test examples ({b} vs {c} discordant)", p)


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, n_samples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> Interval:
    """The interval every claim uses: McNemar's exact interval for one run of each method, the paired
    bootstrap over examples and seeds when either has several seeds."""
    a, b = _as_seeds(correct_a), _as_seeds(correct_b)
    if a.shape[0] == b.shape[0] == 1:
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"a paired test needs the same test examples: {a.shape[1]} and {b.shape[1]}")
        return mcnemar_interval(a[0] > 0.5, b[0] > 0.5, confidence)
    return paired_bootstrap(a, b, n_samples, seed, confidence)


def _as_seeds(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return x[None, :] if x.ndim == 1 else x


def _draws(rng: np.random.Generator, n: int, n_samples: int):
    """Bootstrap resamples of ``n`` example indices, (draws, n), in chunks."""
    done = 0
    while done < n_samples:
        k = min(_CHUNK, n_samples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _seed_mean(rng: np.random.Generator, per_seed: np.ndarray) -> np.ndarray:
    """Mean over a resample (with replacement) of the seeds, per bootstrap draw: ``per_seed`` is (draws, seeds)."""
    draws, k = per_seed.shape
    if k == 1:
        return per_seed[:, 0]
    pick = rng.integers(0, k, size=(draws, k))
    return np.take_along_axis(per_seed, pick, axis=1).mean(axis=1)


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_samples: int = 2000, seed: int = 0,
                     confidence: float = 0.95, scale: float = 100.0) -> Interval:
    """Percentile interval of ``mean(A) - mean(B)`` (times ``scale``: points for 0/1 correctness).

    ``correct_a``/``correct_b`` are (seeds, examples) arrays (or one row) over the same test examples
    in the same order. Each draw resamples the examples (one draw shared by both methods: the pairing)
    and, for a method with several seeds, its seeds; the estimate is the difference of means over seeds.
    """
    a, b = _as_seeds(correct_a), _as_seeds(correct_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired bootstrap needs the same test examples: {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    if n == 0:
        raise ValueError("paired bootstrap needs at least one test example")
    rng = np.random.default_rng(seed)
    diffs = []
    for idx in _draws(rng, n, n_samples):
        # accuracy of every seed on every resample: (draws, seeds)
        acc_a, acc_b = a[:, idx].mean(axis=2).T, b[:, idx].mean(axis=2).T
        diffs.append(_seed_mean(rng, acc_a) - _seed_mean(rng, acc_b))
    d = np.concatenate(diffs) * scale
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    p = mcnemar_exact(a[0] > 0.5, b[0] > 0.5)[2] if a.shape[0] == b.shape[0] == 1 else None
    what = f"paired bootstrap over {n} test examples" + (
        f" and seeds ({a.shape[0]} vs {b.shape[0]})" if max(a.shape[0], b.shape[0]) > 1 else "")
    return Interval(float((a.mean() - b.mean()) * scale), float(low), float(high), confidence, n,
                    a.shape[0], b.shape[0], what + ("; McNemar exact" if p is not None else ""), p)


def seed_bootstrap(values_a: Sequence[float], values_b: Sequence[float], n_samples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> Interval | None:
    """Interval of the difference of seed means when no per-example outputs exist (two seeds or more
    each); ``None`` otherwise: one number per method cannot say how much it would move."""
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    rng = np.random.default_rng(seed)
    d = (rng.choice(a, (n_samples, len(a))).mean(1) - rng.choice(b, (n_samples, len(b))).mean(1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    return Interval(float(a.mean() - b.mean()), float(low), float(high), confidence, 0, len(a), len(b),
                    "bootstrap over seeds (no per-example outputs)")


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacreBLEU's per-sentence sufficient statistics (matches and totals per n-gram order, lengths)."""
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    metric = BLEU()
    return np.asarray(metric._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=float)


def corpus_bleu_from_statistics(stats: np.ndarray) -> float:
    from sacrebleu.metrics import BLEU

    return float(BLEU()._compute_score_from_stats(list(stats)).score)


def paired_bleu_bootstrap(hypotheses_a: Sequence[Sequence[str]], hypotheses_b: Sequence[Sequence[str]],
                          references: Sequence[str], n_samples: int = 1000, seed: int = 0,
                          confidence: float = 0.95) -> Interval:
    """Percentile interval of ``BLEU(A) - BLEU(B)`` by paired bootstrap resampling of test sentences.

    ``hypotheses_a``/``_b`` hold one list of detokenised hypotheses per seed. Each draw resamples the
    sentences (shared by A and B) and the seeds; BLEU is computed from the summed sufficient statistics
    of the drawn sentences of the drawn seeds (corpus BLEU pooled over seeds). The p-value is the
    share of draws whose difference, centred on the mean difference, is at least the observed one
    (the paired bootstrap test of Koehn 2004, as sacreBLEU computes it).
    """
    sa = np.stack([bleu_statistics(h, references) for h in hypotheses_a])  # (seeds, sentences, stats)
    sb = np.stack([bleu_statistics(h, references) for h in hypotheses_b])
    n = sa.shape[1]
    observed = corpus_bleu_from_statistics(sa.sum((0, 1))) - corpus_bleu_from_statistics(sb.sum((0, 1)))
    rng = np.random.default_rng(seed)
    diffs = []
    for chunk in _draws(rng, n, n_samples):
        for idx in chunk:
            pa = rng.integers(0, len(sa), len(sa))
            pb = rng.integers(0, len(sb), len(sb))
            diffs.append(corpus_bleu_from_statistics(sa[pa][:, idx].sum((0, 1)))
                         - corpus_bleu_from_statistics(sb[pb][:, idx].sum((0, 1))))
    d = np.asarray(diffs)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    p = float(((np.abs(d - d.mean()) >= abs(observed)).sum() + 1) / (len(d) + 1))
    seeds = f" and seeds ({len(sa)} vs {len(sb)})" if max(len(sa), len(sb)) > 1 else ""
    return Interval(float(observed), float(low), float(high), confidence, n, len(sa), len(sb),
                    f"paired bootstrap of sacreBLEU over {n} test sentences{seeds}", p)


def clopper_pearson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval of a proportion (e.g. the share of examples two models label alike):
    quantiles of the beta distributions bounding it."""
    from scipy.special import betaincinv

    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    k = successes
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return low, high
