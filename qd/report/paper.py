"""The paper's published numbers (``config/paper_targets.csv``) and the tables that put ours beside them.

A *cell* is one number of the paper: (dataset, model, method, bits, bucket, metric). :func:`paper_join`
matches every cell of a dataset with the measured mean, std and number of seeds of the same
configuration (an outer join: a cell we did not run and a run the paper did not print both show,
the missing side blank, never zero). The renderers lay the join out as the paper does:

* classification (Tables A-D): one block per student, the two FP accuracies under its name, rows =
  methods, columns = bits, each column group "ours | paper | difference";
* translation (Tables E-F): rows = teacher and students, columns = methods x bits, BLEU and
  perplexity in each cell, ours beside the paper's.

Try: ``qd report --config config/presets/cifar10.yaml`` (writes ``tables/<task>_paper.md``).
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

NR = "NR"
CELL_KEYS = ["dataset", "model", "method", "bits", "bucket", "metric"]
# the paper's row order within a student's block
PAPER_METHODS = [("pm", None), ("pm", 256), ("qd", 256), ("dq", 256)]
FP_METHODS = ("fp", "distill")


def read_targets(path: Path) -> pd.DataFrame:
    """The targets file with ``value`` as a float (NaN for NR) and ``bits``/``bucket`` as nullable ints."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"paper targets file {path} does not exist "
                                "(config/paper_targets.csv in the repository)")
    t = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    required = {"table", "dataset", "model", "method", "bits", "bucket", "metric", "value", "source", "note"}
    missing = required - set(t.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    for col in ("role", "teacher"):
        if col not in t:
            t[col] = ""
    for col in ("bits", "bucket"):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype("Int64")
    bad = t[(t["value"] != NR) & pd.to_numeric(t["value"], errors="coerce").isna()]
    if len(bad):
        r = bad.iloc[0]
        raise ValueError(f"{path}: value {r['value']!r} of {r['dataset']}/{r['model']}/{r['method']}/{r['metric']} "
                         "is neither a number nor NR")
    t["value"] = pd.to_numeric(t["value"].where(t["value"] != NR), errors="coerce")
    return t


def _key(v) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _same(col: pd.Series, value) -> pd.Series:
    return col.isna() if value is None or pd.isna(value) else (col == value)


class PaperTargets:
    """Lookups in the targets table."""

    def __init__(self, table: pd.DataFrame):
        self.t = table
        # cell -> value (first non-NR row), so the claims' many lookups do not filter the frame each time
        self._index: dict = {}
        for r in table.itertuples(index=False):
            key = (r.dataset, r.model, r.method, _key(r.bits), _key(r.bucket), r.metric)
            if key not in self._index or (self._index[key] is None and not pd.isna(r.value)):
                self._index[key] = None if pd.isna(r.value) else float(r.value)
        self._datasets_with_numbers = set(table.loc[table["value"].notna(), "dataset"])

    @classmethod
    def read(cls, path: Path) -> "PaperTargets":
        return cls(read_targets(path))

    def cells(self, dataset: str) -> pd.DataFrame:
        return self.t[self.t["dataset"] == dataset]

    def has(self, dataset: str) -> bool:
        return dataset in self._datasets_with_numbers

    def value(self, dataset, model, method, bits=None, bucket=None, metric="accuracy") -> float | None:
        return self._index.get((dataset, model, method, _key(bits), _key(bucket), metric))

    def models(self, dataset: str, role: str | None = None) -> list[str]:
        c = self.cells(dataset)
        if role:
            c = c[c["role"] == role]
        return list(dict.fromkeys(c["model"]))

    def teacher_of(self, dataset: str, model: str) -> str | None:
        c = self.cells(dataset)
        t = c.loc[(c["model"] == model) & (c["teacher"] != ""), "teacher"]
        return None if t.empty else t.iloc[0]

    def differences(self, a: tuple, b: tuple, metric: str = "accuracy") -> list[tuple[str, str, float]]:
        """``(dataset, model, paper A - paper B)`` for every model where the paper prints both cells
        ``a`` and ``b`` (each ``(method, bits, bucket)``)."""
        out = []
        for (ds, model), _ in self.t.groupby(["dataset", "model"], sort=False):
            va, vb = self.value(ds, model, *a, metric=metric), self.value(ds, model, *b, metric=metric)
            if va is not None and vb is not None:
                out.append((ds, model, va - vb))
        return out

    def speed(self, model: str) -> float | None:
        """The paper's ImageNet test-set forward time in seconds (notes 3.3), by the suite's model name."""
        t = self.t[(self.t["metric"] == "forward_seconds") & (self.t["model"] == model)]
        return None if t.empty or t["value"].isna().all() else float(t["value"].dropna().iloc[0])


def short_number(v: float | None, digits: int = 2) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def measured_cell(mean, std, n, digits: int = 2) -> str:
    """``mean ± std (n=k)`` over k seeds; blank when not measured."""
    if mean is None or pd.isna(mean):
        return ""
    if n and n > 1 and std is not None and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f} (n={int(n)})"
    return f"{mean:.{digits}f} (n={int(n) if n and not pd.isna(n) else 1})"


def paper_join(agg: pd.DataFrame, targets: PaperTargets, dataset: str, task: str, metrics: list[str]) -> pd.DataFrame:
    """Outer join of the paper's cells of ``dataset`` (metrics ``metrics``) with the measured cells of
    ``task``: one row per (model, method, bits, bucket, metric); ``paper`` is NaN for NR or absent,
    ``mean`` is NaN where not measured; ``difference`` = ours - paper where both exist."""
    t = targets.cells(dataset)
    t = t[t["metric"].isin(metrics)]
    keys = ["model", "method", "bits", "bucket"]
    paper = t[["table", *keys, "metric", "value", "source"]].rename(columns={"value": "paper"})
    a = agg[agg["task"] == task]
    rows = []
    for metric in metrics:
        if f"{metric}_mean" not in a:
            continue
        m = a[keys + [f"{metric}_mean", f"{metric}_std", "n_seeds"]].rename(
            columns={f"{metric}_mean": "mean", f"{metric}_std": "std"})
        m["metric"] = metric
        rows.append(m)
    ours = (pd.concat(rows, ignore_index=True) if rows
            else pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds", "metric"]))
    for frame in (paper, ours):
        for col in ("bits", "bucket"):
            frame[col] = frame[col].astype("Int64")
    # fill the join key's NA with a sentinel: pandas does not match NA to NA in merges of nullable ints
    sentinel = -1
    p2 = paper.assign(bits=paper["bits"].fillna(sentinel), bucket=paper["bucket"].fillna(sentinel))
    o2 = ours.assign(bits=ours["bits"].fillna(sentinel), bucket=ours["bucket"].fillna(sentinel))
    j = p2.merge(o2, on=[*keys, "metric"], how="outer")
    for col in ("bits", "bucket"):
        j[col] = j[col].astype("Int64").mask(j[col] == sentinel)
    j["difference"] = j["mean"] - j["paper"]
    j["table"] = j["table"].fillna("")
    j["source"] = j["source"].fillna("")
    cols = ["table", *keys, "metric", "mean", "std", "n_seeds", "paper", "difference", "source"]
    return j[cols].reset_index(drop=True)


def _lookup(j: pd.DataFrame, model, method, bits, bucket, metric) -> pd.Series | None:
    m = j[(j["model"] == model) & (j["method"] == method) & (j["metric"] == metric)
          & _same(j["bits"], bits) & _same(j["bucket"], bucket)]
    return None if m.empty else m.iloc[0]


def _triple(r: pd.Series | None, digits: int = 2) -> list[str]:
    """``[ours, paper, difference]`` strings of one cell (blank where absent; NR where the paper's is)."""
    if r is None:
        return ["", "", ""]
    ours = measured_cell(r["mean"], r["std"], r["n_seeds"], digits)
    if pd.isna(r["paper"]):
        paper = NR if r["table"] else ""
    else:
        paper = f"{r['paper']:.{digits}f}"
    diff = "" if pd.isna(r["difference"]) else f"{r['difference']:+.{digits}f}"
    return [ours, paper, diff]


def _method_rows(j: pd.DataFrame, model: str, labels: dict) -> list[tuple[str, int | None]]:
    """The paper's methods first (PM without / with bucket, QD, DQ), then any other quantized method."""
    sub = j[(j["model"] == model) & j["bits"].notna()]
    present = {(m, None if pd.isna(b) else int(b)) for m, b in zip(sub["method"], sub["bucket"])}
    rows = [k for k in PAPER_METHODS if k in present]
    rows += sorted(present - set(rows), key=lambda k: (labels.get(k, k[0]), -1 if k[1] is None else k[1]))
    return rows


def classification_layout(j: pd.DataFrame, students: list[str], teacher: str | None, labels: dict,
                          metric: str = "accuracy") -> str:
    """Markdown in the paper's CIFAR layout: per student, its FP accuracies under its name, then rows =
    methods, columns = bits x (ours, paper, difference)."""
    j = j[j["metric"] == metric]
    out = []
    if teacher is not None:
        ours, paper, diff = _triple(_lookup(j, teacher, "fp", None, None, metric))
        out.append(f"**Teacher `{teacher}`**: ours {ours or 'not run'}; paper {paper or '-'}"
                   + (f"; difference {diff}" if diff else "") + "\n")
    models = list(dict.fromkeys([*students, *[m for m in j["model"] if m != teacher and m not in students]]))
    for s in models:
        sub = j[j["model"] == s]
        if sub.empty:
            continue
        head = []
        for method, name in (("fp", "FP normal"), ("distill", "FP distilled")):
            ours, paper, diff = _triple(_lookup(j, s, method, None, None, metric))
            if ours or paper:
                head.append(f"{name}: ours {ours or '-'}, paper {paper or '-'}" + (f" ({diff})" if diff else ""))
        out.append(f"### `{s}`\n\n" + ("; ".join(head) if head else "no full-precision run") + "\n")
        bits = sorted({int(b) for b in sub["bits"].dropna()})
        rows = _method_rows(j, s, labels)
        if not rows:
            continue
        header = ["method"] + [f"{b}-bit {part}" for b in bits for part in ("ours", "paper", "Δ")]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, bucket in rows:
            cells = [labels.get((method, bucket), method)]
            for b in bits:
                cells += _triple(_lookup(j, s, method, b, bucket, metric))
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def translation_layout(j: pd.DataFrame, models: list[str], labels: dict, metrics=("bleu", "ppl")) -> str:
    """Markdown in the paper's translation layout: rows = teacher and students, columns = methods x
    bits, each cell ``BLEU / perplexity``, ours then the paper's."""
    cols = [("fp", None, None), ("distill", None, None)]
    q = j[j["bits"].notna()]
    for method, bucket in _method_rows(j.assign(model="*"), "*", labels):
        for b in sorted({int(x) for x in q.loc[(q["method"] == method) & _same(q["bucket"], bucket), "bits"]}):
            cols.append((method, b, bucket))

    def cell(model, method, bits, bucket) -> str:
        parts = []
        for who in ("ours", "paper"):
            vals = []
            for metric in metrics:
                r = _lookup(j, model, method, bits, bucket, metric)
                ours, paper, _ = _triple(r)
                vals.append(ours.split(" (")[0] if who == "ours" else paper)
            if any(vals):
                parts.append(f"{who} " + " / ".join(v or "-" for v in vals))
        return "; ".join(parts)

    names = [labels.get((m, bk), m) + ("" if b is None else f" {b}-bit") for m, b, bk in cols]
    lines = ["| model | " + " | ".join(names) + " |", "|" + "---|" * (len(cols) + 1)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(cell(model, *c) for c in cols) + " |")
    return f"Each cell: {' / '.join(metrics)}; ours (mean over seeds) then the paper's (NR = not retrieved).\n\n" + \
        "\n".join(lines) + "\n"
