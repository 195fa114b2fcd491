"""Figures (PNG and PDF) in the task's primary metric: metric vs bits (with the paper's points as
hollow markers where it prints them), metric vs size on disk with its Pareto front, training curves
of the epoch metric against epochs and against core-hours, and latency vs depth. One colour per
method throughout, so the figures read together."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PALETTE = {
    "FP normal": "#7f7f7f",
    "FP distilled": "#2ca02c",
    "PM quantization (no bucket)": "#d62728",
    "PM quantization (bucket 256)": "#ff7f0e",
    "Quantized training": "#9467bd",
    "Quantized distillation": "#1f77b4",
    "Differentiable quantization": "#17becf",
    "Teacher": "#000000",
}
MARKERS = "osD^vP*Xh"
LINESTYLES = {2: ":", 4: "--", 8: "-"}


def _color(label: str, i: int = 0) -> str:
    return PALETTE.get(label, f"C{i % 10}")


def _style():
    plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
                         "grid.alpha": 0.3, "font.size": 9, "legend.frameon": False})


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def metric_vs_bits(agg: pd.DataFrame, task: str, teacher: str, students: list[str], stem: Path,
                   metric: str = "accuracy", label: str = "test accuracy (%)", paper=None, dataset: str = "",
                   labels: dict | None = None) -> list[Path]:
    """One panel per student: quantized methods over bits, full-precision baselines as lines; the
    paper's cells of the same student (``paper``: :class:`qd.report.paper.PaperTargets`) as hollow
    markers and dotted lines in the same colours."""
    _style()
    a = agg[agg["task"] == task]
    mean, std = f"{metric}_mean", f"{metric}_std"
    fig, axes = plt.subplots(1, len(students), figsize=(3.6 * len(students), 3.3), sharey=True, squeeze=False)
    t = a[(a["model"] == teacher) & (a["method"] == "fp")]
    shown_paper = False
    for ax, s in zip(axes[0], students):
        sa = a[a["model"] == s]
        for i, (lab, g) in enumerate(sa[sa["bits"].notna()].groupby("label", sort=False)):
            g = g.sort_values("bits")
            ax.errorbar(g["bits"].astype(int), g[mean], yerr=g[std].fillna(0), marker=MARKERS[i % len(MARKERS)],
                        color=_color(lab, i), label=lab, capsize=2, lw=1.5, ms=4)
        for lab, g in sa[sa["bits"].isna()].groupby("label", sort=False):
            ax.axhline(g[mean].iloc[0], color=_color(lab), ls="--", lw=1, label=lab)
        if not t.empty:
            ax.axhline(t[mean].iloc[0], color=_color("Teacher"), ls="-.", lw=1, label="Teacher")
        if paper is not None and paper.has(dataset):
            shown_paper |= _paper_points(ax, paper, dataset, s, teacher, metric, labels or {})
        bits = set(sa["bits"].dropna().astype(int))
        if paper is not None and paper.has(dataset):
            pc = paper.cells(dataset)
            bits |= set(pc.loc[(pc["model"] == s) & pc["value"].notna(), "bits"].dropna().astype(int))
        bits = sorted(bits)
        ax.set_xscale("log", base=2)
        if bits:
            ax.set_xticks(bits, [str(b) for b in bits])
        ax.minorticks_off()
        ax.set_title(f"{s} ({int(sa['params_mean'].iloc[0]):,} params)" if len(sa) and "params_mean" in sa else s)
        ax.set_xlabel("bits per weight")
    axes[0][0].set_ylabel(label)
    if shown_paper:
        axes[0][-1].scatter([], [], marker="o", facecolors="none", edgecolors="k", label="paper (hollow, dotted)")
    handles, labs = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labs, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle(f"{task}: {label} of quantized students by bit width" + (" beside the paper's" if shown_paper else ""),
                 y=1.03)
    return _save(fig, stem)


def _paper_points(ax, paper, dataset: str, student: str, teacher: str, metric: str, labels: dict) -> bool:
    c = paper.cells(dataset)
    c = c[(c["model"] == student) & (c["metric"] == metric) & c["value"].notna()]
    shown = False
    for (method, bucket), g in c[c["bits"].notna()].groupby(["method", "bucket"], dropna=False, sort=False):
        key = (method, None if pd.isna(bucket) else int(bucket))
        lab = labels.get(key, method)
        g = g.sort_values("bits")
        ax.plot(g["bits"].astype(int), g["value"], ls=":", lw=1, marker="o", ms=6, mfc="none", color=_color(lab))
        shown = True
    for method in ("fp", "distill"):
        v = paper.value(dataset, student, method, metric=metric)
        if v is not None:
            ax.axhline(v, color=_color(labels.get((method, None), method)), ls=":", lw=1)
            shown = True
    v = paper.value(dataset, teacher, "fp", metric=metric)
    if v is not None:
        ax.axhline(v, color=_color("Teacher"), ls=":", lw=1)
    return shown


def pareto_front(sizes: pd.Series, accs: pd.Series, higher_is_better: bool = True) -> pd.DataFrame:
    """Points not beaten by any smaller-or-equal model with a better metric (higher, or lower where lower
    is better), by increasing size."""
    sign = 1.0 if higher_is_better else -1.0
    pts = pd.DataFrame({"size": sizes, "acc": accs, "score": sign * accs}).sort_values(
        ["size", "score"], ascending=[True, False])
    best, keep = float("-inf"), []
    for r in pts.itertuples():
        if r.score > best:
            keep.append(r.Index)
            best = r.score
    return pts.loc[keep, ["size", "acc"]]


def metric_vs_size(agg: pd.DataFrame, task: str, teacher: str, stem: Path, metric: str = "accuracy",
                   label: str = "test accuracy (%)", higher_is_better: bool = True) -> list[Path]:
    """Every model of the task by the size of its file on disk and its primary metric, with the Pareto front."""
    _style()
    a = agg[agg["task"] == task].copy()
    mean = f"{metric}_mean"
    a["label"] = a["label"].where(a["model"] != teacher, "Teacher")
    models = list(dict.fromkeys(a["model"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (lab, g) in enumerate(a.groupby("label", sort=False)):
        for r in g.itertuples():
            ax.scatter(r.size_on_disk_mean / 1e3, getattr(r, mean), color=_color(lab, i),
                       marker=MARKERS[models.index(r.model) % len(MARKERS)], s=28, zorder=3)
        ax.scatter([], [], color=_color(lab, i), marker="o", label=lab)
    for j, m in enumerate(models):
        if m != teacher:
            ax.scatter([], [], color="gray", marker=MARKERS[j % len(MARKERS)], label=m)
    front = pareto_front(a["size_on_disk_mean"] / 1e3, a[mean], higher_is_better)
    ax.step(front["size"], front["acc"], where="post", color="k", lw=0.8, alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("model file on disk (kB: Huffman-coded indices, bucket scales, fp32 rest)")
    ax.set_ylabel(label)
    ax.set_title(f"{task}: {label} vs size on disk")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, stem)


def training_curves(histories: pd.DataFrame, task: str, students: list[str], stem: Path,
                    metric: str = "accuracy", lower_is_better: bool = False) -> list[Path]:
    """The epoch metric on the test split of the reported (quantized) weights per epoch, lowest seed,
    one panel per student (perplexity on a log scale: lower is better)."""
    return _curves(histories, task, students, stem, "epoch", "epoch", metric, lower_is_better,
                   f"{task}: training curves (quantized weights evaluated every epoch)")


def training_hours(histories: pd.DataFrame, task: str, models: list[str], stem: Path,
                   metric: str = "accuracy", lower_is_better: bool = False) -> list[Path]:
    """The same epoch metric against each run's own training time in core-hours (its epochs' wall
    seconds summed, times the threads it ran on: ``core_hours``), one panel per model, the teacher
    first: what an hour of the machine that made the record buys each model. A run that starts from
    another (PM, DQ) counts only its own hours."""
    return _curves(histories, task, models, stem, "core_hours", "core-hours of training", metric,
                   lower_is_better, f"{task}: test {metric} against training time (this record's machine)")


def _curves(histories: pd.DataFrame, task: str, models: list[str], stem: Path, x: str, xlabel: str,
            metric: str, lower_is_better: bool, title: str) -> list[Path]:
    """One panel per model, a line per method and bit width of ``test_<metric>`` against column ``x``."""
    _style()
    col = f"test_{metric}"
    h = histories[histories["task"] == task] if "task" in histories else histories
    fig, axes = plt.subplots(1, len(models), figsize=(3.6 * len(models), 3.3), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], models):
        hs = h[h["model"] == s] if len(h) else h
        for i, ((lab, bits), g) in enumerate(hs.groupby(["label", "bits"], dropna=False, sort=False)):
            if col not in g or x not in g:
                continue
            name = lab if pd.isna(bits) else f"{lab} {int(bits)}-bit"
            ls = "-" if pd.isna(bits) else LINESTYLES.get(int(bits), "-.")
            ax.plot(g[x], g[col], color=_color(lab, i), ls=ls, lw=1.2, label=name)
        if lower_is_better:
            ax.set_yscale("log")
        ax.set_title(s)
        ax.set_xlabel(xlabel)
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel(f"test {metric}" + (" (lower is better)" if lower_is_better else ""))
    handles = {}
    for ax in axes[0]:  # every panel's methods, once each (the teacher's panel has only its own)
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, hd)
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle(title, y=1.03)
    return _save(fig, stem)


def latency_vs_depth(lat: pd.DataFrame, stem: Path, paper_seconds: dict | None = None) -> list[Path]:
    """Measured latency per model, one panel per group; the paper's 4-GPU ratios as open markers
    (``paper_seconds``: the suite's model name -> seconds, from the targets file)."""
    _style()
    groups = list(dict.fromkeys(lat["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        d = lat[lat["group"] == g].reset_index(drop=True)
        ax.bar(range(len(d)), d["relative_time"], yerr=d["iqr_ms"] / d["median_ms"].iloc[0], color="#1f77b4",
               alpha=0.8, capsize=3, label="measured here")
        names = d["model"].str.lower().str.replace("-", "", regex=False)
        paper = names.map(paper_seconds) if paper_seconds is not None else d.get("paper_seconds", pd.Series(
            float("nan"), index=d.index))
        paper = pd.to_numeric(paper, errors="coerce")
        if paper.notna().any():
            ax.scatter(range(len(d)), paper / paper.iloc[0], marker="D", facecolors="none", edgecolors="k",
                       zorder=3, label="paper (4 GPUs)")
        ax.set_xticks(range(len(d)), [f"{m}\n{int(k)} layers" for m, k in zip(d["model"], d["depth"])], fontsize=8)
        ax.set_ylabel(f"time relative to {d['model'].iloc[0]}")
        ax.set_title(f"{g}: {d['device'].iloc[0]}, batch {int(d['batch'].iloc[0])}, "
                     f"{int(d['threads'].iloc[0])} thread(s)")
        ax.legend()
    fig.suptitle("Inference time against depth and width", y=1.03)
    return _save(fig, stem)
