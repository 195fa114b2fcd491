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
from dataclasses import dataclass, field, replace

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
    p_value: float | None = None  # two-sided, against 0 (the test's own: McNemar, bootstrap or normal)
    variances: str = ""  # which sources of variance the interval includes, in words (claims.md prints it)
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)  # bootstrap draws, when any

    def describe(self, digits: int = 2) -> str:
        p = "" if self.p_value is None else f", p = {self.p_value:.3g}"
        return (f"{self.estimate:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}] "
                f"({self.confidence:.0%} {self.test}{p})")

    def p_beyond(self, threshold: float, above: bool = True) -> float:
        """p-value of the one-sided hypothesis the interval rejects when it lies wholly above
        ``threshold`` (``above``: H0 ``A - B <= threshold``) or wholly below it (H0 ``A - B >= threshold``),
        doubled so that ``p < 1 - confidence`` exactly when the two-sided interval clears the threshold:
        from the bootstrap draws where there are draws, else from the interval's half-width as a normal one."""
        if self.draws is not None and len(self.draws):
            d = np.asarray(self.draws)
            share = float(np.mean(d <= threshold) if above else np.mean(d >= threshold))
            return min(1.0, 2 * share)
        from scipy.stats import norm

        z = norm.ppf(0.5 + self.confidence / 2)
        centre, half = (self.low + self.high) / 2, (self.high - self.low) / 2
        if half <= 0:
            return 0.0 if (centre > threshold if above else centre < threshold) else 1.0
        t = (centre - threshold) / (half / z)
        return float(min(1.0, 2 * norm.sf(t if above else -t)))


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


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected with a family-wise error of at most
    ``alpha``. Sorted ascending, the i-th smallest p-value (from 0) is compared with ``alpha / (m - i)``;
    the first that misses stops the procedure."""
    p = np.asarray(list(p_values), float)
    m = len(p)
    out = [False] * m
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if p[j] >= alpha / (m - i):
            break
        out[int(j)] = True
    return out


def family_verdicts(cells: Sequence[tuple[Interval | None, float, str]], rule: str, alpha: float) -> list[str]:
    """The verdict of each ``(interval, threshold, verdict)`` cell once the claim's family-wise error is
    controlled with Holm. A claim that every cell must hold (``all``) FAILs when any cell fails: the FAIL
    side is a union of hypotheses and gets Holm; its PASS needs every cell to pass on its own (an
    intersection-union test, level ``alpha`` as it is). ``any`` is the mirror: Holm on the PASS side. A
    cell whose verdict Holm does not confirm becomes INCONCLUSIVE."""
    out = [v for _, _, v in cells]
    side = FAIL if rule == "all" else PASS
    idx = [i for i, (iv, _, v) in enumerate(cells) if iv is not None and v in (PASS, FAIL)]
    if len(idx) < 2:
        return out
    p = [cells[i][0].p_beyond(cells[i][1], above=(side == PASS)) for i in idx]
    for i, keep in zip(idx, holm(p, alpha)):
        if out[i] == side and not keep:
            out[i] = INCONCLUSIVE
    return out


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


def binomial_run_sd(correct: np.ndarray, scale: float = 100.0) -> float:
    """Run-to-run standard deviation of one run's accuracy under the binomial model (Jordan, ICLR 2024,
    "Calibrated Chaos": between training runs, test accuracy varies about as much as a binomial
    proportion over the test set): ``sqrt(p (1 - p) / n)`` with ``p = (k + 1) / (n + 2)``, so that a
    run right on every example still has some."""
    c = np.asarray(correct, float).reshape(-1)
    n = c.size
    p = (c.sum() + 1) / (n + 2)
    return float(scale * np.sqrt(p * (1 - p) / max(n, 1)))


def variances_text(seeds_a: int, seeds_b: int, examples: str, model: str) -> str:
    """Which variances an interval includes, in words: the test-set sampling, and run-to-run variance
    from the seeds (hierarchical bootstrap) or from the stated model for a side with one seed."""
    parts = [f"test-set sampling ({examples} resampled, paired)"]
    many = [side for side, k in (("A", seeds_a), ("B", seeds_b)) if k > 1]
    one = [side for side, k in (("A", seeds_a), ("B", seeds_b)) if k == 1]
    if many:
        parts.append(f"run-to-run over seeds ({'/'.join(many)}: hierarchical bootstrap, seeds then {examples} "
                     "nested)")
    if one:
        parts.append(f"run-to-run of {'/'.join(one)} from a model: {model}" if model
                     else f"no run-to-run variance for {'/'.join(one)} (one seed, no model)")
    return "; ".join(parts)


def _two_sided_p(d: np.ndarray) -> float:
    return float(min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))))


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, n_samples: int = 2000, seed: int = 0,
                      confidence: float = 0.95, run_variance: str = "binomial") -> Interval:
    """The interval every claim uses for accuracy: the hierarchical bootstrap (seeds, then test examples
    nested, :func:`paired_bootstrap`), with the run-to-run variance of a side that has one seed from
    the binomial model (:func:`binomial_run_sd`). ``run_variance="none"`` drops that model: one run
    each is then compared by McNemar's exact interval, which says whether the two trained models
    differ on this test set, not whether the two methods do."""
    a, b = _as_seeds(correct_a), _as_seeds(correct_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a paired test needs the same test examples: {a.shape[1]} and {b.shape[1]}")
    if run_variance not in ("binomial", "none"):
        raise ValueError(f"unknown run variance model {run_variance!r}; known: binomial, none")
    if run_variance == "none":
        if a.shape[0] == b.shape[0] == 1:
            iv = mcnemar_interval(a[0] > 0.5, b[0] > 0.5, confidence)
            return replace(iv, variances="test-set sampling only (McNemar exact, paired); no run-to-run variance "
                                         "(`report.run_variance_accuracy: none`)")
        return paired_bootstrap(a, b, n_samples, seed, confidence)
    sd_a = binomial_run_sd(a[0]) if a.shape[0] == 1 else 0.0
    sd_b = binomial_run_sd(b[0]) if b.shape[0] == 1 else 0.0
    return paired_bootstrap(a, b, n_samples, seed, confidence, run_sd=(sd_a, sd_b),
                            run_model="binomial, sd = sqrt(p(1-p)/n) per side (Jordan 2024)")


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
                     confidence: float = 0.95, scale: float = 100.0, run_sd: tuple[float, float] = (0.0, 0.0),
                     run_model: str = "") -> Interval:
    """Percentile interval of ``mean(A) - mean(B)`` (times ``scale``: points for 0/1 correctness) by a
    hierarchical bootstrap.

    ``correct_a``/``correct_b`` are (seeds, examples) arrays (or one row) over the same test examples
    in the same order. Each draw resamples the seeds of a method with several (the training runs),
    and the test examples nested within them (one draw shared by both methods and all their seeds:
    the pairing); the estimate is the difference of means over seeds. A side with one seed has no
    spread of its own to resample: its run-to-run variance comes from a model, a normal draw of
    standard deviation ``run_sd`` (points) added to each bootstrap draw (zero: left out).
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
    d = _add_run_noise(rng, d, a.shape[0], b.shape[0], run_sd)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    model = run_model if any(run_sd) else ""
    what = "hierarchical bootstrap" if max(a.shape[0], b.shape[0]) > 1 else "paired bootstrap"
    what += f" over {n} test examples" + (
        f" and seeds ({a.shape[0]} vs {b.shape[0]})" if max(a.shape[0], b.shape[0]) > 1 else "")
    if model:
        what += " + run-to-run model"
    return Interval(float((a.mean() - b.mean()) * scale), float(low), float(high), confidence, n,
                    a.shape[0], b.shape[0], what, _two_sided_p(d),
                    variances_text(a.shape[0], b.shape[0], "examples", model), d)


def _add_run_noise(rng: np.random.Generator, d: np.ndarray, seeds_a: int, seeds_b: int,
                   run_sd: tuple[float, float]) -> np.ndarray:
    """Bootstrap draws of ``A - B`` plus a normal draw of each one-seed side's run-to-run spread."""
    var = (run_sd[0] ** 2 if seeds_a == 1 else 0.0) + (run_sd[1] ** 2 if seeds_b == 1 else 0.0)
    return d + rng.normal(0.0, np.sqrt(var), size=d.shape) if var > 0 else d


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
                    "bootstrap over seeds (no per-example outputs)", None,
                    "run-to-run over seeds only (no per-example outputs: the test-set sampling is not included)", d)


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
                          confidence: float = 0.95, run_sd: tuple[float, float] = (0.0, 0.0),
                          run_model: str = "") -> Interval:
    """Percentile interval of ``BLEU(A) - BLEU(B)`` by a hierarchical bootstrap over seeds and test sentences.

    ``hypotheses_a``/``_b`` hold one list of detokenised hypotheses per seed. Each draw resamples the
    seeds and the sentences nested in them (shared by A and B); BLEU is computed from the summed
    sufficient statistics of the drawn sentences of the drawn seeds (corpus BLEU pooled over seeds).
    A side with one seed gets its run-to-run spread from a model: a normal draw of standard deviation
    ``run_sd`` (BLEU points) added to each draw. The p-value is the share of draws on the far side of
    0, doubled (with no run-to-run model and one seed each: the paired bootstrap of Koehn 2004).
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
    d = _add_run_noise(rng, np.asarray(diffs), len(sa), len(sb), run_sd)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    seeds = f" and seeds ({len(sa)} vs {len(sb)})" if max(len(sa), len(sb)) > 1 else ""
    model = run_model if any(run_sd) else ""
    what = f"{'hierarchical' if seeds else 'paired'} bootstrap of sacreBLEU over {n} test sentences{seeds}"
    return Interval(float(observed), float(low), float(high), confidence, n, len(sa), len(sb),
                    what + (" + run-to-run model" if model else ""), _two_sided_p(d),
                    variances_text(len(sa), len(sb), "sentences", model), d)


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
