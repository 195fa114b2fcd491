"""Claims 5 and 6 on the saved models of a task whose kind says they apply (``TaskInfo.weight_checks``),
fed with the test inputs its adapter reads from the prepared data (``Task.test_examples``):

* 5: every uniformly quantized student (its row says ``uniform_grid``) runs from its integer codes on
  an integer inference path (``qd.report.integer``);
* 6: the paper's statement itself: for fixed inputs, the output error of each layer of the distilled
  students over many draws of stochastically quantized weights is Gaussian, with the variance of the
  paper's formula at every level count (``qd.report.noise``).

Each writes its table (``tables/<task>_integer``, ``tables/<task>_noise``).

Try: ``pytest tests/test_report.py -m slow -k classification_folder``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qd.errors import MissingRun
from qd.report.claims.base import Claim, ClaimSpec, Evidence
from qd.report.collect import runs_of
from qd.report.stats import INCONCLUSIVE
from qd.report.tables import write_table

INTEGER = ClaimSpec("5", "Uniformly quantized students run on low-precision integer inference stacks (TensorRT, "
                         "FPGAs).", ("integer_tolerance", "integer_min_agreement", "integer_examples",
                                     "integer_activation_bits"))
NOISE = ClaimSpec("6", "Weight quantization acts like additive Gaussian noise on layer outputs, with a variance "
                       "that depends on the number of levels.",
                  ("noise_examples", "noise_max_skewness", "noise_max_excess_kurtosis", "noise_variance_factor",
                   "noise_units"))


def artefact_path(results: Path, run: str) -> Path:
    from qd.run import ARTEFACT

    return Path(results) / run / ARTEFACT


def _artefact(results: Path, run: str) -> Path:
    path = artefact_path(results, run)
    if not path.exists():
        raise MissingRun(f"{path} does not exist: the run {run} has not finished")
    return path


def _says_not_uniform(value) -> bool:
    """The row's ``uniform_grid`` is False (a method whose codes are not an even grid: DQ's points, a
    codebook); rows without the column are taken at their codes."""
    return value is not None and not pd.isna(value) and not bool(value)


def _settle(c: Claim, table: tuple, verdict: str | None, lines: list[str], empty: str) -> bool:
    """Write the claim's table ``(rows, stem, title, caption)``; give the claim its verdict and evidence
    lines, or say why it has none (``verdict`` None: nothing was checked) and return False."""
    rows, stem, title, caption = table
    write_table(pd.DataFrame(rows), stem, title, caption, index=False)
    if verdict is None:
        c.evidence.append(empty)
        return False
    c.verdict = c.measured = verdict
    c.evidence = lines
    return True


class SavedModels:
    """``(model, codes)`` of saved runs, each file read once (claims 5 and 6 share PM students)."""

    def __init__(self, results: Path, keep: int = 64):
        self.results, self.keep, self.cache = results, keep, {}

    def __call__(self, run: str):
        if run not in self.cache:
            from qd.report.integer import load_run

            if len(self.cache) >= self.keep:
                self.cache.pop(next(iter(self.cache)))
            model, codes, _ = load_run(_artefact(self.results, run))
            self.cache[run] = (model, codes)
        return self.cache[run]


def onnx_integer(results: Path, row, x):
    """The run's logits on onnxruntime's integer path where the workflow built one (8-bit per-channel
    runs with ``evaluation.onnx``), else None (the emulated path runs)."""
    if pd.isna(row.get("onnx_integer_agreement", float("nan"))):
        return None
    from qd.onnx.run import integer_stack

    return integer_stack(_artefact(results, row["run"]).parent, x)


def claim_integer(ev: Evidence, models: SavedModels, x, y) -> Claim:
    from qd.report.integer import check_integer_model, check_line, check_rows, verdict_of

    settings, task = ev.cfg, ev.task
    n = min(settings["integer_examples"], len(y))
    c = INTEGER.claim(
        f"every uniformly quantized student run from its integer codes (b-bit weights, per-bucket scale and "
        f"offset, {settings['integer_activation_bits']}-bit activations, integer sums per bucket segment): "
        f"accuracy >= simulated - {settings['integer_tolerance']:g} points (`report.integer_tolerance`) and the "
        f"same label on >= {settings['integer_min_agreement']:.0%} of the examples "
        f"(`report.integer_min_agreement`), on {n} test examples (`report.integer_examples`); on onnxruntime's "
        f"integer path (QLinearConv/QGemm) where the run has one (8-bit per channel, `evaluation.onnx`), else in "
        f"integer arithmetic emulated in PyTorch: each line names its stack")
    checks = []
    quantized = ev.df[ev.df["bits"].notna()].sort_values("seed")
    for _, r in quantized.drop_duplicates(["model", "method", "bits", "bucket"]).iterrows():
        if _says_not_uniform(r.get("uniform_grid")):
            continue  # the method's codes are not an even grid: not the claim's students
        model, codes = models(r["run"])
        checks.append(check_integer_model(model, codes, x[:n], y[:n], settings, r["run"],
                                          None if pd.isna(r["bucket"]) else int(r["bucket"]),
                                          settings["bootstrap_seed"], onnx_integer(models.results, r, x[:n])))
    table = (check_rows(checks), models.results / "tables" / f"{task}_integer",
             f"{task}: quantized students run from their integer codes",
             "Per model (lowest seed): accuracy of the simulated model and of the integer path, their paired "
             "difference, the share of examples labelled alike, the largest integer accumulator, how the buckets "
             "sit on output channels (channels spanning more than one bucket cannot take one per-channel scale), "
             "and the accuracy after re-quantizing those channels with one bucket each (same bits; 8 bits).")
    if not _settle(c, table, verdict_of(checks) if checks else None, [check_line(k) for k in checks],
                   "no uniformly quantized student in this preset"):
        return c
    c.seeds, c.n_test = "lowest seed of each model", n
    # the line names the model that settles the verdict: a failing one where there is one (its accuracy may
    # hold while its labels do not), else the one with the lowest interval
    failing = [k for k in checks if k.verdict == "FAIL"]
    shown = failing[0] if failing else min(checks, key=lambda k: k.interval.low)
    c.summary = (f"{sum(k.verdict == 'PASS' for k in checks)} of {len(checks)} models hold, {len(failing)} fail; "
                 f"{'failing' if failing else 'weakest'} {shown.run}: {shown.interval.describe()}, same label on "
                 f"{shown.agreement:.1%}")
    _, c.models = ev.comparability([ev.teacher, *ev.students])
    return c


def noise_bits(ev: Evidence) -> list[int]:
    """The bit widths claim 6 draws at: the preset's PM bit widths (else its quantized methods')."""
    return ev.bits_run("pm") or sorted({b for m in ("qd", "qt", "dq") for b in ev.bits_run(m)})


def claim_noise(ev: Evidence, models: SavedModels, x) -> Claim:
    from qd.report.noise import falls_with_bits, layer_noise, noise_line, noise_rows, noise_verdict

    settings, task, df = ev.cfg, ev.task, ev.df
    n = min(settings["noise_examples"], len(x))
    bits = noise_bits(ev)
    bucket = ev.main_bucket("pm") if ev.bits_run("pm") else ev.main_bucket("qd")
    c = NOISE.claim(
        f"the paper's statement itself: for {n} fixed test inputs (`report.noise_examples`), "
        f"{settings['noise_draws']} draws of the stochastically quantized weights (`report.noise_draws`; bucket "
        f"{bucket}) of each distilled student, every conv/linear layer, at {', '.join(map(str, bits))} bits: the "
        f"output error's |skewness| < {settings['noise_max_skewness']:g} and |excess kurtosis| < "
        f"{settings['noise_max_excess_kurtosis']:g}, its variance within {settings['noise_variance_factor']:g}x "
        "of the paper's formula sum x_i^2 step^2 f_i(1-f_i) at every level count, and falling as bits grow")
    rows = []
    for s in ev.students:
        fp = runs_of(df, task, s, "distill")
        if fp.empty or not bits:
            continue
        rows += layer_noise(models(fp["run"].iloc[0])[0], bits, x[:n], settings, bucket, s,
                            settings["bootstrap_seed"])
    table = (noise_rows(rows), models.results / "tables" / f"{task}_noise",
             f"{task}: output error of stochastically quantized layers (claim 6)",
             "Per student, layer and bit width, for fixed test inputs: skewness and excess kurtosis of the output "
             "error over draws of the stochastically quantized weights, each unit standardised (intervals: bootstrap "
             "over the draws), and its variance against the paper's formula sum_i x_i^2 step_i^2 f_i (1 - f_i) "
             "(ratio, same bootstrap), with the layer's fan-in.")
    if not _settle(c, table, noise_verdict(rows) if rows else None, [noise_line(r) for r in rows],
                   "needs a distilled student (its trained weights) and a bit width in the preset"):
        return c
    bad = falls_with_bits(rows)
    if bad:
        c.evidence.append("the error does not fall as bits grow in: " + ", ".join(bad))
    c.seeds, c.n_test = "lowest seed's distilled students", n
    c.variances = (f"draws of the stochastic rounding ({settings['noise_draws']} per layer and bit width; intervals "
                   "by bootstrap over the draws); the inputs are fixed, as the statement is")
    c.family = "family-wise error over layers and bit widths not controlled (every cell must hold)"
    counts = {v: sum(r.verdict == v for r in rows) for v in ("PASS", "INCONCLUSIVE", "FAIL")}
    c.summary = (f"{len(rows)} layer x bit cells: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)
                 + (f"; not falling with bits: {', '.join(bad)}" if bad else ""))
    _, c.models = ev.comparability([ev.teacher, *ev.students])
    if c.verdict == INCONCLUSIVE:
        c.evidence.append("INCONCLUSIVE: some interval straddles its threshold; more draws would settle it")
    return c


def drawn_examples(x, y, n: int, seed: int):
    """``n`` test examples drawn at random without replacement, in a fixed order (``seed``): claims 5 and 6
    take the first ``integer_examples`` and ``noise_examples`` of them. A split stored class by class
    (CIFAR-10's image folders) would otherwise give them one class: its first 1,000 images are airplanes."""
    import torch

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[order], y[order]


def check(ev: Evidence) -> list[Claim]:
    """Claims 5 and 6 where the task's kind checks its saved models; NOT TESTED (with empty tables where
    the kind writes them) otherwise."""
    if not ev.info.weight_checks:
        why = f"not tested on {ev.kind} tasks"
        return [INTEGER.untested(why), NOISE.untested(why)]
    if ev.data_folder is None:  # evidence without a prepared dataset (a check on run folders alone)
        why = "needs the prepared test data"
        return [INTEGER.untested(why), NOISE.untested(why)]
    from qd.tasks import load_task

    examples = load_task(ev.kind, ev.info.entry).test_examples(ev.data_folder)
    if examples is None:
        why = f"needs the prepared test data under {ev.data_folder}"
        for name in ("integer", "noise"):
            write_table(pd.DataFrame(), ev.results / "tables" / f"{ev.task}_{name}", f"{ev.task}: {name}", why,
                        index=False)
        return [INTEGER.untested(why), NOISE.untested(why)]
    x, y = drawn_examples(*examples, max(ev.cfg["integer_examples"], ev.cfg["noise_examples"]),
                          ev.cfg["bootstrap_seed"])
    models = SavedModels(ev.results)  # claims 5 and 6 share the PM students' files
    return [claim_integer(ev, models, x, y), claim_noise(ev, models, x)]
