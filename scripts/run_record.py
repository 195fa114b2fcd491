"""Write ``results/<preset>/run.json``: how a run that becomes a reference record was produced
(command, machine, wall time), read from the Snakemake log of the run that produced it; the runs'
commit is in the summary's ``code_version`` column. ``qd reference --preset <preset>`` then copies it
with the run's other record files to ``reference/<preset>/results/``.

A track's wall time is the time Snakemake ran, from its log's first to its last timestamp; a run that
was interrupted and resumed has several logs, given in order, and the record adds up their spans
(the time between them is not counted). A start that was stopped has no stamp for the moment it stopped,
so its span ends at its last job stamp: with stopped starts the wall time is a lower bound, and the
record counts them (``stopped``). The README's ``provenance:<preset>`` section prints it.

The command is stored with no path of this machine (``qd.report.reference.portable_command``): a path
inside the project relative to it, any other (a dataset's ``root``) as a placeholder the user fills in.
``--rewrite`` passes the command of existing records through the same code and keeps every other field.

    python scripts/run_record.py --preset cifar10-cpu \\
        --command "snakemake --cores 2 --config preset=cifar10-cpu ..." .snakemake/log/2026-...snakemake.log
    python scripts/run_record.py --rewrite reference/*/results/run.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qd.report.benchmark import machine  # noqa: E402
from qd.report.reference import portable_command  # noqa: E402

# Snakemake stamps each job start and end as "[Thu Dec  3 08:52:12 2026]"
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.M)
_DONE = re.compile(r"^(\d+) of (\d+) steps \(100%\) done$", re.M)
_FINISHED = re.compile(r"^Finished jobid: ", re.M)


class Span(NamedTuple):
    """One Snakemake log: its first and last timestamp, the jobs it finished, whether it ran to the end."""
    start: datetime
    end: datetime
    jobs: int
    done: bool


def log_span(text: str, name: str) -> Span:
    stamps = [datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y") for s in _STAMP.findall(text)]
    done = bool(_DONE.search(text))
    # a start stopped while its first job ran has one stamp: its span is unknown, counted as 0 (a lower bound)
    if len(stamps) < (2 if done else 1):
        raise SystemExit(f"{name}: too few Snakemake timestamps; is it a Snakemake log?")
    return Span(stamps[0], stamps[-1], len(_FINISHED.findall(text)), done)


def rewrite(path: Path, root: Path) -> bool:
    """Pass an existing record's command through :func:`portable_command`, every other field kept;
    whether it changed."""
    record = json.loads(path.read_text())
    command = portable_command(record["command"], root)
    if command == record["command"]:
        return False
    path.write_text(json.dumps({**record, "command": command}, indent=1) + "\n")
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset")
    p.add_argument("--command", help="the command line that ran the workflow")
    p.add_argument("--root", type=Path, default=ROOT)
    p.add_argument("--rewrite", action="store_true",
                   help="the files given are run.json records: rewrite their commands with no path of this machine")
    p.add_argument("logs", nargs="+", type=Path, help="the run's Snakemake log(s), in order (run.json with --rewrite)")
    a = p.parse_args(argv)
    if a.rewrite:
        for f in a.logs:
            print(f"{f}: {'command rewritten' if rewrite(f, a.root) else 'unchanged'}")
        return 0
    if not (a.preset and a.command):
        p.error("--preset and --command are needed (or --rewrite)")
    spans = [log_span(f.read_text(), str(f)) for f in a.logs]
    if not spans[-1].done:
        raise SystemExit(f"{a.logs[-1]}: no '(100%) done' line: the run did not finish")
    wall = sum((span.end - span.start).total_seconds() for span in spans)
    # each log finishes only the jobs its predecessors left, so the track's jobs are their sum
    record = {"preset": a.preset, "command": portable_command(a.command, a.root), "machine": machine(),
              "started": spans[0].start.isoformat(), "finished": spans[-1].end.isoformat(), "wall_s": wall,
              "jobs": sum(span.jobs for span in spans), "logs": len(spans),
              # a start that was stopped (killed) writes nothing after its last job stamp: wall_s is then a
              # lower bound, the runs' own time (summary.csv) the full count
              "stopped": sum(not span.done for span in spans)}
    out = a.root / "results" / a.preset / "run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{out}: {wall / 60:.1f} min wall, {record['jobs']} jobs (next: qd reference --preset {a.preset})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
