"""The paired interval of two lists of runs of one task: the one function the claims and ``qd compare`` call.

The task kind's description names how its runs are paired (``TaskInfo.paired``, a function of
``qd.tasks.outputs``' shape, reading the runs' per-example test outputs); a kind that names none, or
runs that left no outputs, give ``None`` and the caller decides what to fall back to (the claims:
the spread over seeds).

Try: ``pytest tests/test_claims.py -k paired``.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path

from qd.report.stats import Interval
from qd.tasks import TaskInfo

# what ``qd compare`` uses when no report block is at hand: the report schema's defaults
DEFAULT_SAMPLES, DEFAULT_SEED, DEFAULT_CONFIDENCE = 2000, 0, 0.95


@functools.lru_cache(maxsize=1)
def _defaults() -> tuple:
    import yaml

    from qd.config import SCHEMA_PATH

    schema = SCHEMA_PATH.parent / "report.schema.yaml"
    props = yaml.safe_load(schema.read_text())["properties"]
    return tuple((k, v["default"]) for k, v in props.items() if "default" in v)


def default_settings() -> dict:
    """The ``report:`` block's defaults (``workflow/schemas/report.schema.yaml``)."""
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in _defaults()}


def paired_function(info: TaskInfo):
    """The kind's paired-interval function, or ``None`` where the kind names none."""
    if not info.paired:
        return None
    module, _, name = info.paired.partition(":")
    return getattr(importlib.import_module(module), name)


def paired_interval(info: TaskInfo, results: Path, runs_a: list[str], runs_b: list[str], data_folder: Path | None,
                    n_samples: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED,
                    confidence: float = DEFAULT_CONFIDENCE, settings: dict | None = None) -> Interval | None:
    """Interval of ``metric(A) - metric(B)`` over the test examples (and seeds) of two lists of run folders,
    a side with one seed taking its run-to-run variance from the model ``settings`` (the ``report:``
    block; default: the schema's) names. A plug-in kind's function that takes no ``settings`` is called
    without them."""
    paired = paired_function(info)
    if paired is None or not runs_a or not runs_b:
        return None
    settings = {**default_settings(), **(settings or {})}
    kw = {"settings": settings} if "settings" in inspect.signature(paired).parameters else {}
    return paired(Path(results), list(runs_a), list(runs_b), data_folder, n_samples, seed, confidence, **kw)
