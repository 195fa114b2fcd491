"""The per-example test outputs a run leaves in its folder, and the paired interval of two lists of runs.

A task kind names one function of this shape in its description (``TaskInfo.paired``, "module:function")::

    paired(results, runs_a, runs_b, data_folder, n_samples, seed, confidence, settings=None) -> Interval | None

``runs_a``/``runs_b`` are run folders relative to ``results`` (the seeds of one configuration each),
``data_folder`` the task's prepared dataset; the result is the interval of ``metric(A) - metric(B)``
in points of the kind's primary metric, or ``None`` where some run left no per-example outputs (the
report then falls back to the spread over seeds). ``settings`` is the ``report:`` block (its
``run_variance_*`` keys: the model of run-to-run variance for a side with one seed; docs/verdicts.md);
``None`` takes the schema's defaults. The claims and ``qd compare`` both call it through
``qd.report.paired``. A kind without per-example outputs leaves ``paired`` empty.

* :func:`paired_accuracy`: image classification, from each run's ``test_outputs.csv`` (index, label,
  prediction): a hierarchical bootstrap over seeds and the test examples nested in them, a side with
  one seed taking its run-to-run variance from the binomial model (``report.run_variance_accuracy``);
* :func:`paired_bleu`: translation, from each run's ``test_hypotheses.txt`` and the references of
  the prepared dataset: the same bootstrap of sacreBLEU over seeds and sentences (at most 1000 draws,
  as sacreBLEU's default), a side with one seed taking its run-to-run variance from the calibration
  measured on the task's seeds (``report.run_variance_bleu``, ``qd.report.calibration``).

This module stays torch-free. Try: ``pytest tests/test_claims.py -k paired``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from qd.report.stats import Interval, paired_bleu_bootstrap, paired_difference
from qd.tasks import TASKS

# the files the adapters write (one home: the task descriptions)
CORRECTNESS_FILE = TASKS["classification"].outputs
HYPOTHESES_FILE = TASKS["translation"].outputs
REFERENCES_FILE = "test_references.txt"  # the translation data rule's references, unless its manifest names another
BLEU_MAX_DRAWS = 1000  # sacreBLEU's default for its paired bootstrap


def correctness(results: Path, runs: list[str]) -> np.ndarray | None:
    """(seeds, test examples) 0/1 array from each run's ``test_outputs.csv``; ``None`` when a run has none."""
    rows = []
    for run in runs:
        path = Path(results) / run / CORRECTNESS_FILE
        if not path.exists():
            return None
        t = pd.read_csv(path)
        missing = {"index", "label", "prediction"} - set(t.columns)
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        t = t.sort_values("index")
        rows.append((t["label"].to_numpy() == t["prediction"].to_numpy()).astype(float))
    if not rows:
        return None
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"runs {runs} have test outputs of different lengths: not the same test set")
    return np.stack(rows)


def hypotheses(results: Path, runs: list[str]) -> list[list[str]] | None:
    """One list of detokenised test hypotheses per run (``test_hypotheses.txt``); ``None`` when missing."""
    out = []
    for run in runs:
        path = Path(results) / run / HYPOTHESES_FILE
        if not path.exists():
            return None
        out.append(lines(path))
    return out


def lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, one per test example (a final newline ends the last line)."""
    text = Path(path).read_text(encoding="utf-8")
    parts = text.split("\n")
    return parts[:-1] if text.endswith("\n") else parts


def references(data_folder: Path) -> list[str] | None:
    """The detokenised test references of a prepared translation dataset: the file the manifest names
    under ``test_references``, else ``test_references.txt`` beside it; ``None`` when neither exists."""
    folder = Path(data_folder)
    name = REFERENCES_FILE
    manifest = folder / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        name = m.get("test_references") or m.get("files", {}).get("test_references") or name
    path = folder / name
    if not path.exists():
        return None
    return lines(path)


def _settings(settings: dict | None) -> dict:
    if settings is not None:
        return settings
    from qd.report.paired import default_settings

    return default_settings()


def paired_accuracy(results: Path, runs_a: list[str], runs_b: list[str], data_folder: Path | None,
                    n_samples: int, seed: int, confidence: float, settings: dict | None = None) -> Interval | None:
    """Accuracy difference of two lists of runs over the same test examples (``data_folder`` unused:
    each run's outputs carry their labels)."""
    ca, cb = correctness(results, runs_a), correctness(results, runs_b)
    if ca is None or cb is None:
        return None
    if ca.shape[1] != cb.shape[1]:
        raise ValueError(f"{runs_a[0]} and {runs_b[0]} were evaluated on test sets of different sizes "
                         f"({ca.shape[1]} and {cb.shape[1]})")
    return paired_difference(ca, cb, n_samples, seed, confidence, _settings(settings)["run_variance_accuracy"])


def paired_bleu(results: Path, runs_a: list[str], runs_b: list[str], data_folder: Path | None,
                n_samples: int, seed: int, confidence: float, settings: dict | None = None) -> Interval | None:
    """Corpus-BLEU difference of two lists of runs against the references of ``data_folder``; a side
    with one seed gets the run-to-run spread of ``qd.report.calibration.run_sd``."""
    from qd.report.calibration import metrics_of, run_sd

    ha, hb = hypotheses(results, runs_a), hypotheses(results, runs_b)
    refs = references(data_folder) if data_folder is not None else None
    if not ha or not hb or not refs:
        return None
    cfg = _settings(settings)
    sds, texts = [], []
    for runs in (runs_a, runs_b):
        sd, text = run_sd(metrics_of(results, runs[0]), cfg) if len(runs) == 1 else (0.0, "")
        sds.append(sd)
        texts.append(text)
    model = " | ".join(dict.fromkeys(t for t in texts if t))
    return paired_bleu_bootstrap(ha, hb, refs, min(n_samples, BLEU_MAX_DRAWS), seed, confidence, tuple(sds), model)
