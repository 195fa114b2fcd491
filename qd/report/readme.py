"""README sections generated from committed records, and the check that they still match.

A generated section sits between two markers that name what fills it::

    <!-- qd:begin table:demo -->
    ... (written by `qd readme`, never by hand) ...
    <!-- qd:end table:demo -->

Section names are ``<generator>:<arguments>``; each generator reads the reference records committed
with the repository under ``reference/<preset>/results/`` (``qd.report.reference``; written on purpose by
``qd reference``), never a live run's ``results/<preset>/``:

* ``table:<preset>``: the task's own table of the primary metric (rows = methods, columns = model x
  bits), from ``reference/<preset>/results/summary.csv``;
* ``claims:<preset>``: every claim's verdict with its deciding interval, threshold and what it rests
  on, from ``reference/<preset>/results/claims.csv``;
* ``provenance:<preset>``: the commits, devices and library versions of the runs, and their number
  and summed run time, from ``summary.csv``; the command and wall time of the whole workflow from
  ``run.json`` where there is one (``scripts/run_record.py``), its command with no path of the machine
  that made it (``qd.report.reference.portable_command``);
* ``paper:<preset>:<task>``: the paper-layout table, from ``reference/<preset>/results/tables/<task>_paper.md``;
* ``benchmarks`` or ``benchmark:<name>``: measured ratios against their budgets, from
  ``benchmarks/results/<name>.json`` (written by ``qd.report.benchmark.write_benchmark_record``).

``qd readme`` rewrites the sections of ``README.md`` and ``benchmarks/README.md``; ``qd readme
--check`` only compares them and exits 1 naming each section that differs from its records (the
test suite runs the same check).

Try: ``qd readme --check``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from qd.report.benchmark import BENCHMARK_RESULTS
from qd.report.reference import portable_command, reference_results

BEGIN, END = "<!-- qd:begin {} -->", "<!-- qd:end {} -->"
_SECTION = re.compile(r"<!-- qd:begin (?P<name>[^ ]+) -->\n(?P<body>.*?)<!-- qd:end (?P=name) -->", re.S)
_MARKER = re.compile(r"<!-- qd:(begin|end) ([^ ]+) -->")
DOCS = ("README.md", "benchmarks/README.md")


class RecordMissing(FileNotFoundError):
    pass


def _read(path: Path, what: str) -> Path:
    if not path.exists():
        raise RecordMissing(f"{path} does not exist: section {what!r} is generated from it (commit the record, "
                            "or run the step that writes it)")
    return path


# ---------------------------------------------------------------------- generators
def _fmt(v, digits=1) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def section_table(root: Path, preset: str) -> str:
    """Primary metric per method x model x bits, one table per task (one decimal, mean over seeds)."""
    from qd.report import rows_info
    from qd.report.collect import aggregate
    from qd.tasks import DEFAULT_KIND

    df = pd.read_csv(_read(reference_results(root, preset) / "summary.csv", f"table:{preset}"))
    for col in ("bits", "bucket"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    if "kind" not in df:
        df["kind"] = DEFAULT_KIND
    agg = aggregate(df)
    out = []
    for task in dict.fromkeys(df["task"]):
        t = df[df["task"] == task]
        info = rows_info(t)
        a = agg[agg["task"] == task]
        teacher = t.loc[t["role"] == "teacher", "model"].iloc[0]
        students = list(dict.fromkeys(t.loc[t["role"] == "student", "model"]))
        bits = sorted({int(b) for b in a["bits"].dropna()})
        cols = [(s, b) for s in students for b in [None, *bits]]
        cols = [c for c in cols if not a[(a["model"] == c[0]) & _bits_is(a["bits"], c[1])].empty]
        mean = f"{info.primary}_mean"
        head = ["method"] + [f"{s} " + ("fp32" if b is None else f"{b}-bit") for s, b in cols]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label in dict.fromkeys(a.loc[a["model"] != teacher, "label"]):
            cells = []
            for s, b in cols:
                r = a[(a["model"] == s) & (a["label"] == label) & _bits_is(a["bits"], b)]
                cells.append(_fmt(r[mean].iloc[0]) if len(r) else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        tr = a[(a["model"] == teacher) & (a["method"] == "fp")]
        seeds = int(t["seed"].nunique())
        n = f"{int(t['n_test'].max()):,} test examples" if "n_test" in t and t["n_test"].notna().any() else ""
        out.append(f"Task `{task}` ({info.label}; {seeds} seed{'s' if seeds > 1 else ''}"
                   + (f", {n}" if n else "") + f"). Teacher `{teacher}`: "
                   + (f"{tr[mean].iloc[0]:.2f}" if len(tr) else "not run") + ".\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def _bits_is(col: pd.Series, b) -> pd.Series:
    return col.isna() if b is None else (col == b)


def section_claims(root: Path, preset: str) -> str:
    c = pd.read_csv(_read(reference_results(root, preset) / "claims.csv", f"claims:{preset}"), dtype={"claim": str})
    lines = ["| task | claim | verdict | deciding interval (points) | holds when | rests on |",
             "|---|---|---|---|---|---|"]
    for r in c.itertuples():
        verdict = f"**{r.verdict}**" + (f" (measured: {r.measured})" if r.verdict != r.measured else "")
        summary = getattr(r, "summary", "")
        iv = (("" if pd.isna(summary) else summary) if pd.isna(r.estimate)
              else f"{r.where}: {r.estimate:+.2f} [{r.low:+.2f}, {r.high:+.2f}]")
        thr = "" if pd.isna(r.threshold) else f"> {r.threshold:+.2f}"
        n = "" if pd.isna(r.n_test) else f"{int(r.n_test):,} examples"
        seeds = "" if pd.isna(r.seeds) else r.seeds
        lines.append(f"| {r.task} | {r.claim} {r.statement} | {verdict} | {iv} | {thr} | "
                     + "; ".join(x for x in (seeds, n) if x) + " |")
    return "\n".join(lines)


def section_provenance(root: Path, preset: str) -> str:
    record = reference_results(root, preset)
    df = pd.read_csv(_read(record / "summary.csv", f"provenance:{preset}"))

    def values(col):
        return ", ".join(f"`{v}`" for v in sorted(df[col].dropna().astype(str).unique())) if col in df else "unknown"

    wall = df["wall_time"].sum() if "wall_time" in df else float("nan")
    text = (f"Record `{record.relative_to(root).as_posix()}/`: {len(df)} runs from commit {values('code_version')} "
            f"on {values('device')} (torch {values('torch')}, Python {values('python')}); the runs' own time adds "
            f"up to {wall / 60:.1f} min.")
    run = record / "run.json"  # written by scripts/run_record.py from the Snakemake log
    if run.exists():
        r = json.loads(run.read_text())
        # a resumed or re-entered run has one log per start; the pauses between them are not counted
        command = portable_command(r["command"], root)
        starts = f" over {r['logs']} starts of" if r.get("logs", 1) > 1 else ""
        stopped = r.get("stopped", 0)
        # a stopped start's log ends at its last job stamp, not when it stopped: its wall time is a lower bound
        least = "at least " if stopped else ""
        why = (f"; stopped starts: {stopped} of {r['logs']}, and a stopped start's log ends at its last job stamp, "
               "so its time after that counts in the runs' own time only") if stopped else ""
        text += (f" The workflow ({r['jobs']} jobs) took {least}{r['wall_s'] / 60:.1f} min of wall time on "
                 f"{r['machine']} (started {r['started'].replace('T', ' ')}{why}){starts}:\n\n```bash\n{command}\n```")
        mine = list(dict.fromkeys(re.findall(r"<your [^>]+>", command)))
        if mine:
            text += ("\n\n(" + ", ".join(f"`{m}`" for m in mine) + " stands for a path on the machine that made "
                     "the record: give yours.)")
    return text


def section_paper(root: Path, preset: str, task: str) -> str:
    text = _read(reference_results(root, preset) / "tables" / f"{task}_paper.md", f"paper:{preset}:{task}").read_text()
    return text.split("\n", 1)[1].strip() if text.startswith("# ") else text.strip()


def _benchmark_files(root: Path, name: str | None) -> list[Path]:
    folder = root / BENCHMARK_RESULTS
    if name:
        return [_read(folder / f"{name}.json", f"benchmark:{name}")]
    files = sorted(folder.glob("*.json"))
    if not files:
        raise RecordMissing(f"no benchmark records under {folder}: section 'benchmarks' is generated from them")
    return files


def within_budget(value: float, budget, better: str) -> str:
    if budget is None or pd.isna(budget):
        return ""
    ok = value <= budget if better == "lower" else value >= budget
    return "yes" if ok else "**no**"


def section_benchmarks(root: Path, name: str | None = None) -> str:
    lines = ["| what | measured | budget | within | benchmark, commit, machine, date |", "|---|---|---|---|---|"]
    for path in _benchmark_files(root, name):
        rec = json.loads(path.read_text())
        load = rec.get("load_average")
        src = (f"`{rec['benchmark']}`, `{rec.get('code_version', '?')}`, {rec.get('machine', '?')}"
               + ("" if load is None else f" (load {load:g})") + f", {rec.get('date', '?')}")
        for r in rec["rows"]:
            unit = f" {r['unit']}" if r.get("unit") else ""
            budget = r.get("budget")
            lines.append(f"| {r['what']} | {r['value']:.{r.get('digits', 2)}f}{unit} | "
                         + ("" if budget is None else f"{budget:g}{unit}") + f" | "
                         f"{within_budget(r['value'], budget, r.get('better', 'lower'))} | {src} |")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[..., str]] = {
    "table": section_table, "claims": section_claims, "provenance": section_provenance, "paper": section_paper,
    "benchmarks": section_benchmarks, "benchmark": section_benchmarks,
}


def render_section(name: str, root: Path) -> str:
    generator, *args = name.split(":")
    if generator not in GENERATORS:
        raise ValueError(f"unknown README section {name!r}: generators are {', '.join(sorted(GENERATORS))}")
    return GENERATORS[generator](Path(root), *args).rstrip("\n") + "\n"


# ---------------------------------------------------------------------- the documents
def sections(text: str, source: str = "README") -> list[str]:
    """The names of the generated sections in ``text``, checking that markers pair up."""
    markers = _MARKER.findall(text)
    stack, names = [], []
    for kind, name in markers:
        if kind == "begin":
            if stack:
                raise ValueError(f"{source}: section {name!r} begins inside section {stack[-1]!r}")
            stack.append(name)
        else:
            if not stack or stack[-1] != name:
                raise ValueError(f"{source}: 'qd:end {name}' without a matching begin")
            names.append(stack.pop())
    if stack:
        raise ValueError(f"{source}: section {stack[-1]!r} has no 'qd:end' marker")
    return names


def rendered(text: str, root: Path, source: str = "README") -> str:
    """``text`` with every generated section rewritten from the records under ``root``."""
    sections(text, source)
    return _SECTION.sub(lambda m: BEGIN.format(m["name"]) + "\n" + render_section(m["name"], root)
                        + END.format(m["name"]), text)


def outdated(text: str, root: Path, source: str = "README") -> list[str]:
    """Names of the sections whose text differs from what their records give."""
    bad = []
    for m in _SECTION.finditer(text):
        if m["body"] != render_section(m["name"], root):
            bad.append(m["name"])
    sections(text, source)
    return bad


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``qd readme [--check] [--root DIR] [FILE ...]``: rewrite (or check) the generated sections."""
    p = argparse.ArgumentParser(prog="qd readme", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="*", help=f"documents (default: {', '.join(DOCS)})")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2]), help="repository root (the records)")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 naming each outdated section")
    args = p.parse_args(argv)
    root = Path(args.root)
    files = [Path(f) for f in args.files] or [root / d for d in DOCS if (root / d).exists()]
    status = 0
    for f in files:
        text = f.read_text(encoding="utf-8")
        if args.check:
            bad = outdated(text, root, str(f))
            for name in bad:
                print(f"{f}: section {name!r} differs from its records (run: qd readme)", file=sys.stderr)
            status |= bool(bad)
        else:
            new = rendered(text, root, str(f))
            if new != text:
                f.write_text(new, encoding="utf-8")
                print(f"{f}: {len(sections(text, str(f)))} generated sections rewritten", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
