"""Claim 2: inference speed-up is almost linear in depth reduction, from the timings of the preset.

* 2a/2b on the depth timing (``latency_depth.csv``, ``evaluation.depth_latency``): ResNet-18's speed-up
  over ResNet-34 against the depth ratio, and 2xResNet-18 (same depth, twice as wide) against ResNet-18,
  with the paper's ImageNet timings from the targets file; the report writes their table and figure
  and states the two claims once per preset (:func:`depth_outputs`), not under every task. They are
  statements about GPU inference: timed on a CPU (2a holds by counting multiply-adds, 2b fails for the
  same reason) they are NOT COMPARABLE: device, with the measured verdict beside; judged on CUDA;
* 2c on the task's own trained models (the timing job's ``latency.csv``): each FP student's speed-up
  over the teacher against their depth ratio, depth counted on the saved models (:func:`weight_depth`);
* 2 NOT TESTED where neither timing ran.

Try: ``pytest tests/test_claims.py -k speed``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from qd.report.claims.base import FAIL, INCONCLUSIVE, NOT_COMPARABLE, PASS, Claim, ClaimSpec, Evidence
from qd.report.collect import LATENCY_FILE, runs_of
from qd.report.figures import latency_vs_depth
from qd.report.paper import PaperTargets
from qd.report.stats import combine
from qd.report.tables import write_table

SPEED = ClaimSpec("2", "Inference speed-up is almost linear in depth reduction.")
DEPTH_SPEED = ClaimSpec("2a", "Inference speed-up is almost linear in depth reduction (ResNet-34 -> ResNet-18).",
                        ("speedup_fraction_of_depth",))
WIDE_SPEED = ClaimSpec("2b", "A wider student of the same depth keeps the speed (2xResNet-18 as fast as ResNet-18).",
                       ("wide_max_time_ratio",))
TRAINED_SPEED = ClaimSpec("2c", "Inference speed-up is almost linear in depth reduction (the task's teacher -> "
                                "students).", ("speedup_fraction_of_depth",))
DEPTH_FILE = "latency_depth.csv"


def _name(model: str) -> str:
    """The suite's model name of a timing row ('ResNet-34' -> 'resnet34')."""
    return model.lower().replace("-", "").replace("_", "")


def _ratio_interval(num_ms: float, num_iqr: float, den_ms: float, den_iqr: float) -> tuple[float, float]:
    """Range of ``num / den`` when each time moves over its interquartile range (median -+ IQR/2)."""
    lo = max(num_ms - num_iqr / 2, 1e-12) / (den_ms + den_iqr / 2)
    hi = (num_ms + num_iqr / 2) / max(den_ms - den_iqr / 2, 1e-12)
    return lo, hi


def _range_verdict(lo: float, hi: float, threshold: float, above: bool = True) -> str:
    if above:
        return PASS if lo >= threshold else (FAIL if hi < threshold else INCONCLUSIVE)
    return PASS if hi <= threshold else (FAIL if lo > threshold else INCONCLUSIVE)


def claim_depth_speed(lat: pd.DataFrame, targets: PaperTargets, cfg: dict) -> list[Claim]:
    """Claim 2 on the timed ResNets (``latency_depth.csv``): ResNet-18's speed-up over ResNet-34 against
    the depth ratio, and 2xResNet-18 (same depth, twice as wide) against ResNet-18; the paper's
    ImageNet timings are read from the targets file."""
    frac, wide_max = cfg["speedup_fraction_of_depth"], cfg["wide_max_time_ratio"]
    t = lat[lat["group"] == "imagenet"].copy()
    t["name"] = t["model"].map(_name)
    t = t.set_index("name")
    need = {"resnet34", "resnet18", "2xresnet18"}
    if not need <= set(t.index):
        return [DEPTH_SPEED.untested(f"{DEPTH_FILE} lacks {sorted(need - set(t.index))}")]
    where = f"{t['device'].iloc[0]}, {int(t['threads'].iloc[0])} thread(s), batch {int(t['batch'].iloc[0])}"
    deep, shallow, wide = t.loc["resnet34"], t.loc["resnet18"], t.loc["2xresnet18"]
    depth_ratio = float(deep["depth"] / shallow["depth"])
    p34, p18, p2x = (targets.speed(m) for m in ("resnet34", "resnet18", "2xresnet18"))
    paper = (f"paper, ImageNet test set on 4 GPUs: {p34:g} s vs {p18:g} s = {p34 / p18:.2f}x "
             f"({p34 / p18 / depth_ratio:.0%} of the depth ratio)") if p34 and p18 else "paper: not in the targets file"
    speedup = float(deep["median_ms"] / shallow["median_ms"])
    lo, hi = _ratio_interval(deep["median_ms"], deep["iqr_ms"], shallow["median_ms"], shallow["iqr_ms"])
    a = DEPTH_SPEED.claim(f"ResNet-18's speed-up over ResNet-34 >= {frac:g} x the depth ratio {depth_ratio:.2f} "
                          f"(`report.speedup_fraction_of_depth`)")
    a.paper = paper
    a.verdict = a.measured = _range_verdict(lo, hi, frac * depth_ratio)
    a.evidence = [f"ResNet-34 {deep['median_ms']:.1f} ms (IQR {deep['iqr_ms']:.1f}), ResNet-18 "
                  f"{shallow['median_ms']:.1f} ms (IQR {shallow['iqr_ms']:.1f}): speed-up {speedup:.2f} "
                  f"[{lo:.2f}, {hi:.2f} over the IQRs] = {speedup / depth_ratio:.0%} of the depth ratio; holds when "
                  f">= {frac * depth_ratio:.2f}; on {where}"]
    a.seeds = "median and IQR of the timing repeats"
    a.summary = f"speed-up {speedup:.2f} [{lo:.2f}, {hi:.2f}] vs >= {frac * depth_ratio:.2f}"
    ratio = float(wide["median_ms"] / shallow["median_ms"])
    lo, hi = _ratio_interval(wide["median_ms"], wide["iqr_ms"], shallow["median_ms"], shallow["iqr_ms"])
    b = WIDE_SPEED.claim(f"2xResNet-18 takes <= {wide_max:g} x ResNet-18's time (`report.wide_max_time_ratio`)")
    b.paper = f"paper: {p2x:g} s vs {p18:g} s = {p2x / p18:.2f}x" if p2x and p18 else ""
    b.verdict = b.measured = _range_verdict(lo, hi, wide_max, above=False)
    b.evidence = [f"2xResNet-18 {wide['median_ms']:.1f} ms = {ratio:.2f}x ResNet-18 [{lo:.2f}, {hi:.2f}] on {where}; "
                  "it has 4x the multiply-adds, which a device with idle parallel units hides and a busy CPU does not"]
    b.seeds = "median and IQR of the timing repeats"
    b.summary = f"time ratio {ratio:.2f} [{lo:.2f}, {hi:.2f}] vs <= {wide_max:g}"
    device = str(t["device"].iloc[0])
    for c in (a, b):
        c.variances = "timing repeats (interquartile range of each model's time)"
        if not device.lower().startswith("cuda"):
            c.verdict = NOT_COMPARABLE
            c.evidence.append(f"NOT COMPARABLE: device `{device}`. The paper's statement is about GPU inference; on "
                              "a CPU the time follows the multiply-adds (2a holds, 2b fails, for that reason alone). "
                              f"The measured verdict ({c.measured}) is given beside; a CUDA timing is judged.")
    return [a, b]


def claim_trained_speed(ev: Evidence, depth: dict[str, int]) -> Claim:
    """Claim 2 on the task's own trained models (the timing job's ``latency.csv``): each FP student's
    speed-up over the teacher against their depth ratio (layers with weights)."""
    frac = ev.cfg["speedup_fraction_of_depth"]
    c = TRAINED_SPEED.claim(f"each student's speed-up over the teacher >= {frac:g} x their depth ratio "
                            "(`report.speedup_fraction_of_depth`), timed by the preset's timing job")
    t = ev.row(ev.teacher, "fp")
    if t is None or "latency_median_ms_mean" not in t or pd.isna(t["latency_median_ms_mean"]) \
            or ev.teacher not in depth:
        c.evidence.append("no teacher latency (the timing job writes latency.csv) or no teacher depth")
        return c
    verdicts = []
    for s in ev.students:
        r = ev.row(s, "fp")
        if r is None or pd.isna(r.get("latency_median_ms_mean")) or s not in depth:
            continue
        dr = depth[ev.teacher] / depth[s]
        t_iqr = t.get("latency_iqr_ms_mean", 0.0)
        s_iqr = r.get("latency_iqr_ms_mean", 0.0)
        t_iqr = 0.0 if pd.isna(t_iqr) else t_iqr
        s_iqr = 0.0 if pd.isna(s_iqr) else s_iqr
        sp = t["latency_median_ms_mean"] / r["latency_median_ms_mean"]
        lo, hi = _ratio_interval(t["latency_median_ms_mean"], t_iqr, r["latency_median_ms_mean"], s_iqr)
        v = _range_verdict(lo, hi, frac * dr)
        verdicts.append(v)
        width = float(t["params_mean"] / r["params_mean"]) if "params_mean" in r else float("nan")
        c.evidence.append(f"{s}: {depth[s]} layers vs the teacher's {depth[ev.teacher]} (ratio {dr:.2f}); speed-up "
                          f"{sp:.2f} [{lo:.2f}, {hi:.2f} over the IQRs]; holds when >= {frac * dr:.2f}: **{v}** "
                          f"(the teacher also has {width:.1f}x the parameters: width, not only depth, differs)")
    if verdicts:
        c.verdict = c.measured = combine(verdicts, "all")
        c.seeds = "median and IQR of the timing job's repeats"
        c.variances = "timing repeats (interquartile range); family-wise error over students not controlled"
        c.scope, why = ev.scope_of()
        if why:
            c.evidence.append(why)
        c.summary = f"{sum(v == PASS for v in verdicts)} of {len(verdicts)} students hold"
    return c


def weight_depth(model) -> int:
    """Layers with weights, as the paper counts depth: conv and linear layers, and each layer of an LSTM."""
    import torch.nn as nn

    depth = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTMCell)):
            depth += 1
        elif isinstance(m, nn.LSTM):
            depth += m.num_layers
    return depth


def model_depths(ev: Evidence, models: list[str]) -> dict[str, int]:
    """Layers with weights of each model's FP run (counted on the saved model)."""
    from qd.report.claims.weights import artefact_path
    from qd.report.integer import load_run

    out = {}
    for m in models:
        r = runs_of(ev.df, ev.task, m, "fp")
        if len(r) and artefact_path(ev.results, r["run"].iloc[0]).exists():
            out[m] = weight_depth(load_run(artefact_path(ev.results, r["run"].iloc[0]))[0])
    return out


def depth_outputs(results: Path, figures: Path, paper: PaperTargets, settings: dict) -> list[Claim]:
    """Table, figure and claims 2a/2b from ``latency_depth.csv`` when the depth timing ran (once per preset;
    every task's claims page shows them)."""
    path = results / DEPTH_FILE
    if not path.exists():
        return []
    lat = pd.read_csv(path)
    names = lat["model"].str.lower().str.replace("-", "", regex=False)
    lat["paper_seconds"] = [paper.speed(n) for n in names]
    table = lat[["group", "model", "depth", "width", "params", "median_ms", "iqr_ms", "relative_time",
                 "paper_seconds", "device", "threads", "batch"]]
    write_table(table, results / "tables" / "latency_depth", "Latency against depth",
                "Median forward-pass time on this machine (IQR over repeats); relative_time is against the "
                "deepest model of each group; paper_seconds is the paper's ImageNet test-set time on 4 GPUs "
                "(config/paper_targets.csv).", index=False)
    latency_vs_depth(lat, figures / "latency_depth", {n: paper.speed(n) for n in names})
    return claim_depth_speed(lat, paper, settings)


def check(ev: Evidence) -> list[Claim]:
    """2c where the timing job ran (2a/2b are the preset's, stated once: :func:`depth_outputs`); 2 NOT
    TESTED where neither timing ran."""
    if (ev.results / LATENCY_FILE).exists():
        return [claim_trained_speed(ev, model_depths(ev, [ev.teacher, *ev.students]))]
    if ev.depth_claims:
        return []
    return [SPEED.untested("needs the depth timing (evaluation.depth_latency.enabled) or the timing job")]
