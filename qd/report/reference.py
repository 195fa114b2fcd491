"""Reference records: a finished run's record files promoted, on purpose, to ``reference/<preset>/``.

A run writes ``results/<preset>/`` and ``figures/<preset>/`` (both ignored by git: a user's run never
touches a tracked file). The records committed with the repository live apart from them::

    reference/<preset>/results/   summary.csv, claims.md, claims.csv, latency.csv, latency_depth.csv,
                                  run.json, tables/   (what results/<preset>/ holds, less the run folders)
    reference/<preset>/figures/   the figures (PNG and PDF), as figures/<preset>/ holds them

The README's generated sections (``qd readme``) read only these, and ``qd diff`` sets a user's run
beside them. ``qd reference --preset P`` copies a finished run's record files there (never weights,
run folders, logs or specs), replacing the preset's previous reference whole so that no stale file
stays behind; the maintainers then run ``qd readme`` and commit both.

Provenance names no path of the machine that made a record: :func:`portable_command` rewrites a
command line's absolute paths, relative to the project where they lie inside it, and otherwise to a
placeholder named after the key the user sets (``root: <your data folder>``).

Try: ``qd reference --preset demo --dry-run``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

from qd.report import RECORDS

PROJECT = Path(__file__).resolve().parents[2]
REFERENCE = Path("reference")
# a run's record files beside RECORDS: the timings the report read, and the workflow's provenance
# (scripts/run_record.py); tables/ is copied whole and figures/ by suffix
EXTRA_RECORDS = ("latency.csv", "latency_depth.csv", "run.json")
FIGURE_SUFFIXES = (".png", ".pdf")
TABLE_SUFFIXES = (".md", ".csv")


def reference_results(root: Path, preset: str) -> Path:
    """``<root>/reference/<preset>/results``: the committed record of ``results/<preset>/``."""
    return Path(root) / REFERENCE / preset / "results"


def reference_figures(root: Path, preset: str) -> Path:
    """``<root>/reference/<preset>/figures``: the committed figures of ``figures/<preset>/``."""
    return Path(root) / REFERENCE / preset / "figures"


# ---------------------------------------------------------------------- paths in provenance
# an absolute path: a slash not inside a word, a relative path or a URL ("https://"), then path characters
# up to whitespace, a quote or YAML flow punctuation
_ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?!/)[^\s'\"{}\[\],;]+")
_KEY_BEFORE = re.compile(r"([\w.-]+)\s*[:=]\s*$")
PLACEHOLDERS = {"root": "<your data folder>"}


def portable_command(command: str, root: Path = PROJECT) -> str:
    """``command`` with no absolute path of this machine: a path inside the project ``root`` becomes
    relative to it; any other becomes a placeholder for what the user gives there, named after the key
    it is the value of (``{root: /srv/data}`` -> ``{root: <your data folder>}``)."""
    roots = {os.path.normpath(str(root)), os.path.normpath(str(Path(root).resolve()))}

    def repl(m: re.Match) -> str:
        path = os.path.normpath(m.group(0))
        for r in roots:
            if path == r:
                return "."
            if path.startswith(r + os.sep):
                return os.path.relpath(path, r)
        key = _KEY_BEFORE.search(command[:m.start()])
        name = key.group(1).rsplit(".", 1)[-1] if key else None
        return PLACEHOLDERS.get(name, f"<your {name}>" if name else "<your path>")

    return _ABSOLUTE.sub(repl, command)


# ---------------------------------------------------------------------- promoting a run
def record_files(results: Path, figures: Path) -> list[tuple[Path, Path]]:
    """``(source, destination relative to reference/<preset>/)`` for every record file of a finished
    run: never a run folder, a weight file, a log or a spec."""
    results, figures = Path(results), Path(figures)
    files = [(results / name, Path("results") / name) for name in (*RECORDS, *EXTRA_RECORDS)
             if (results / name).is_file()]
    tables = results / "tables"
    if tables.is_dir():
        files += [(p, Path("results") / "tables" / p.name) for p in sorted(tables.iterdir())
                  if p.is_file() and p.suffix in TABLE_SUFFIXES]
    if figures.is_dir():
        files += [(p, Path("figures") / p.name) for p in sorted(figures.iterdir())
                  if p.is_file() and p.suffix in FIGURE_SUFFIXES]
    return files


def promote(preset: str, root: Path = PROJECT, results: Path | None = None, figures: Path | None = None,
            dry_run: bool = False) -> list[Path]:
    """Copy the record files of the finished run ``results``/``figures`` (default ``<root>/results/<preset>``
    and ``<root>/figures/<preset>``) to ``<root>/reference/<preset>/``, replacing what was there; returns
    the files written (relative to the project root)."""
    root = Path(root)
    results = Path(results) if results else root / "results" / preset
    figures = Path(figures) if figures else root / "figures" / preset
    missing = [name for name in RECORDS if not (results / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{results} lacks {', '.join(missing)}: not a finished run (run the workflow, "
                                f"e.g. snakemake --cores 2 --config preset={preset}, first)")
    run = results / "run.json"
    if run.is_file():
        recorded = json.loads(run.read_text()).get("preset")
        if recorded not in (None, preset):
            raise ValueError(f"{run} records preset {recorded!r}, not {preset!r}")
    files = record_files(results, figures)
    dest = root / REFERENCE / preset
    written = [REFERENCE / preset / rel for _, rel in files]
    if dry_run:
        return written
    # build the new reference beside the old one, then swap: no stale file of the old one survives
    tmp = dest.with_name(f".{preset}.new")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, rel in files:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tmp / rel)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    """``qd reference --preset P [--results DIR] [--figures DIR] [--root DIR] [--dry-run]``."""
    p = argparse.ArgumentParser(prog="qd reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True, help="the preset whose finished run becomes its reference record")
    p.add_argument("--results", help="the run's results folder (default <root>/results/<preset>)")
    p.add_argument("--figures", help="the run's figures folder (default <root>/figures/<preset>)")
    p.add_argument("--root", default=str(PROJECT), help="the project root (reference/ is written under it)")
    p.add_argument("--dry-run", action="store_true", help="only list the files it would copy")
    a = p.parse_args(argv)
    root = Path(a.root)
    try:
        written = promote(a.preset, root, a.results and Path(a.results), a.figures and Path(a.figures), a.dry_run)
    except (FileNotFoundError, ValueError) as e:
        print(f"qd: {e}", file=sys.stderr)
        return 1
    for f in written:
        print(f)
    dest = REFERENCE / a.preset
    if not any(f.name == "run.json" for f in written):
        print(f"{dest}: no run.json in the run, so the README's provenance will give no command or wall time "
              "(scripts/run_record.py writes it from the run's Snakemake log)", file=sys.stderr)
    verb = "would be" if a.dry_run else "were"
    print(f"{len(written)} record files {verb} copied to {dest}/; next: qd readme, check `git diff`, commit",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
