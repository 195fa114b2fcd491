"""Figures (PNG and PDF): accuracy vs bits, accuracy vs model size with its Pareto front, and
training curves. One colour per method throughout, so the figures read together."""
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


def accuracy_vs_bits(agg: pd.DataFrame, task: str, teacher: str, students: list[str], stem: Path) -> list[Path]:
    """One panel per student: quantized methods over bits, full-precision baselines as lines."""
    _style()
    a = agg[agg["task"] == task]
    fig, axes = plt.subplots(1, len(students), figsize=(3.6 * len(students), 3.3), sharey=True, squeeze=False)
    t = a[(a["model"] == teacher) & (a["method"] == "fp")]
    for ax, s in zip(axes[0], students):
        sa = a[a["model"] == s]
        for i, (label, g) in enumerate(sa[sa["bits"].notna()].groupby("label", sort=False)):
            g = g.sort_values("bits")
            ax.errorbar(g["bits"].astype(int), g["accuracy_mean"], yerr=g["accuracy_std"].fillna(0), marker=MARKERS[i],
                        color=_color(label, i), label=label, capsize=2, lw=1.5, ms=4)
        for label, g in sa[sa["bits"].isna()].groupby("label", sort=False):
            ax.axhline(g["accuracy_mean"].iloc[0], color=_color(label), ls="--", lw=1, label=label)
        if not t.empty:
            ax.axhline(t["accuracy_mean"].iloc[0], color=_color("Teacher"), ls="-.", lw=1, label="Teacher")
        bits = sorted(sa["bits"].dropna().astype(int).unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(bits, [str(b) for b in bits])
        ax.minorticks_off()
        ax.set_title(f"{s} ({int(sa['params_mean'].iloc[0]):,} params)" if len(sa) else s)
        ax.set_xlabel("bits per weight")
    axes[0][0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle(f"{task}: accuracy of quantized students by bit width", y=1.03)
    return _save(fig, stem)


def pareto_front(sizes: pd.Series, accs: pd.Series) -> pd.DataFrame:
    """Points not beaten by any smaller-or-equal model with higher accuracy, by increasing size."""
    pts = pd.DataFrame({"size": sizes, "acc": accs}).sort_values(["size", "acc"], ascending=[True, False])
    best, keep = float("-inf"), []
    for r in pts.itertuples():
        if r.acc > best:
            keep.append(r.Index)
            best = r.acc
    return pts.loc[keep]


def accuracy_vs_size(agg: pd.DataFrame, task: str, teacher: str, stem: Path) -> list[Path]:
    """Every model of the task by the size of its file on disk and accuracy, with the Pareto front."""
    _style()
    a = agg[agg["task"] == task].copy()
    a["label"] = a["label"].where(a["model"] != teacher, "Teacher")
    models = list(dict.fromkeys(a["model"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (label, g) in enumerate(a.groupby("label", sort=False)):
        for r in g.itertuples():
            ax.scatter(r.size_on_disk_mean / 1e3, r.accuracy_mean, color=_color(label, i),
                       marker=MARKERS[models.index(r.model) % len(MARKERS)], s=28, zorder=3)
        ax.scatter([], [], color=_color(label, i), marker="o", label=label)
    for j, m in enumerate(models):
        if m != teacher:
            ax.scatter([], [], color="gray", marker=MARKERS[j % len(MARKERS)], label=m)
    front = pareto_front(a["size_on_disk_mean"] / 1e3, a["accuracy_mean"])
    ax.step(front["size"], front["acc"], where="post", color="k", lw=0.8, alpha=0.6, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("model file on disk (kB: Huffman-coded indices, bucket scales, fp32 rest)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{task}: accuracy vs size")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _save(fig, stem)


def training_curves(histories: pd.DataFrame, task: str, students: list[str], stem: Path) -> list[Path]:
    """Test accuracy of the reported (quantized) weights per epoch, seed 0, one panel per student."""
    _style()
    h = histories[histories["task"] == task]
    fig, axes = plt.subplots(1, len(students), figsize=(3.6 * len(students), 3.3), sharey=True, squeeze=False)
    for ax, s in zip(axes[0], students):
        for i, ((label, bits), g) in enumerate(h[h["model"] == s].groupby(["label", "bits"], dropna=False, sort=False)):
            name = label if pd.isna(bits) else f"{label} {int(bits)}-bit"
            ls = "-" if pd.isna(bits) else LINESTYLES.get(int(bits), "-.")
            ax.plot(g["epoch"], g["test_accuracy"], color=_color(label, i), ls=ls, lw=1.2, label=name)
        ax.set_title(s)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0][0].set_ylabel("test accuracy (%)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    fig.suptitle(f"{task}: training curves (quantized weights evaluated every epoch)", y=1.03)
    return _save(fig, stem)


def latency_vs_depth(lat: pd.DataFrame, stem: Path) -> list[Path]:
    """Measured latency per model, one panel per group; the paper's 4-GPU ratios as open markers."""
    _style()
    groups = list(dict.fromkeys(lat["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    for ax, g in zip(axes[0], groups):
        d = lat[lat["group"] == g].reset_index(drop=True)
        ax.bar(range(len(d)), d["relative_time"], yerr=d["iqr_ms"] / d["median_ms"].iloc[0], color="#1f77b4",
               alpha=0.8, capsize=3, label="measured here")
        paper = d["paper_seconds"]
        if paper.notna().any():
            ax.scatter(range(len(d)), paper / paper.iloc[0], marker="D", facecolors="none", edgecolors="k",
                       zorder=3, label="paper (4 GPUs)")
        ax.set_xticks(range(len(d)), [f"{m}\n{int(k)} layers" for m, k in zip(d["model"], d["depth"])], fontsize=8)
        ax.set_ylabel(f"time relative to {d['model'].iloc[0]}")
        ax.set_title(f"{g}: {d['device'].iloc[0]}, batch {int(d['batch'].iloc[0])}, {int(d['threads'].iloc[0])} thread(s)")
        ax.legend()
    fig.suptitle("Inference time against depth and width", y=1.03)
    return _save(fig, stem)
