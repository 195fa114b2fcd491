"""README sections generated from the reference records: rendering from synthetic records promoted
with ``qd reference``, the check that notices an edited number, provenance with no path of the machine
that made a record, and the repository's own README and benchmarks/README against the reference
records committed with them (apart from results/ and figures/, which a run writes and git ignores)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report_synthetic import grid_cells, write_grid

from qd.report.build import report_settings
from qd.report.claims.base import Evidence
from qd.report.claims.page import claims_frame
from qd.report.claims.registry import check_claims
from qd.report.collect import aggregate, collect
from qd.report.paper import PaperTargets
from qd.report.benchmark import benchmark_record, save_benchmark
from qd.report.readme import main, outdated, render_section, rendered, section_benchmarks, sections, within_budget
from qd.report.reference import portable_command, promote

ROOT = Path(__file__).resolve().parents[1]


def _records(root: Path) -> None:
    """A finished synthetic run in ``results/demo/``, promoted to ``reference/demo/`` as ``qd reference`` does."""
    results = root / "results" / "demo"
    write_grid(results, grid_cells(dq4=94.9), n=400)
    df = collect(results)
    df.to_csv(results / "summary.csv", index=False)
    ev = Evidence(df, aggregate(df), "t", "teacher", ["s"], results, PaperTargets.read(ROOT / "config" /
                                                                                       "paper_targets.csv"),
                  {**report_settings(None), "bootstrap_samples": 300})
    claims_frame({"t": check_claims(ev)}).to_csv(results / "claims.csv", index=False)
    (results / "tables").mkdir()
    (results / "tables" / "t_paper.md").write_text("# t: the paper's numbers beside ours\n\nbody\n")
    (results / "claims.md").write_text("# claims\n")
    promote("demo", root)
    bench = root / "benchmarks" / "results"
    bench.mkdir(parents=True)
    rec = benchmark_record("bench_quantizer", "python benchmarks/bench_quantizer.py",
                           [{"what": "4-bit quantizer vs clone", "value": 1.8, "unit": "x", "budget": 1.5},
                            {"what": "throughput vs fairseq", "value": 0.95, "budget": 0.9, "better": "higher"}], ROOT)
    rec.update(code_version="abc123", machine="Linux x86_64, 2 cores", date="2026-01-01",  # fixed for the test
               load_average=0.25)
    (bench / "bench_quantizer.json").write_text(json.dumps(rec))


README = """# Title

Some prose with a number 3.14 that no record backs.

<!-- qd:begin table:demo -->
<!-- qd:end table:demo -->

<!-- qd:begin claims:demo -->
old claims
<!-- qd:end claims:demo -->

<!-- qd:begin provenance:demo -->
<!-- qd:end provenance:demo -->

<!-- qd:begin paper:demo:t -->
<!-- qd:end paper:demo:t -->

<!-- qd:begin benchmarks -->
<!-- qd:end benchmarks -->
"""


def test_sections_render_from_records_and_the_check_sees_an_edit(tmp_path):
    _records(tmp_path)
    assert sections(README) == ["table:demo", "claims:demo", "provenance:demo", "paper:demo:t", "benchmarks"]
    assert set(outdated(README, tmp_path)) == set(sections(README))
    text = rendered(README, tmp_path)
    assert outdated(text, tmp_path) == []
    assert "Some prose with a number 3.14" in text  # text outside the markers is left alone
    assert "| Quantized distillation |  | 85.0 | 95.0 |" in text and "| method | s fp32 | s 2-bit | s 4-bit |" in text
    assert "Teacher `teacher`: 96.00" in text and "400 test examples" in text
    assert "**PASS**" in text and "> -2.00" in text
    assert "from commit `abc123` on `cpu (x86_64, 2 threads)`" in text
    assert "\nbody\n" in text and "the paper's numbers beside ours" not in text
    assert "| 4-bit quantizer vs clone | 1.80 x | 1.5 x | **no** |" in text
    assert "| throughput vs fairseq | 0.95 | 0.9 | yes |" in text
    assert "Linux x86_64, 2 cores (load 0.25), 2026-01-01" in text  # the machine's load when it was taken
    edited = text.replace("| 85.0 | 95.0 |", "| 85.0 | 95.3 |", 1)
    assert outdated(edited, tmp_path) == ["table:demo"]
    # the command line: --check fails on the edit, a rewrite fixes it
    doc = tmp_path / "README.md"
    doc.write_text(edited)
    assert main(["--check", "--root", str(tmp_path), str(doc)]) == 1
    assert main(["--root", str(tmp_path), str(doc)]) == 0
    assert doc.read_text() == text and main(["--check", "--root", str(tmp_path), str(doc)]) == 0


def test_bad_markers_and_missing_records_are_named(tmp_path):
    with pytest.raises(ValueError, match="'table:demo' has no 'qd:end'"):
        sections("<!-- qd:begin table:demo -->\n")
    with pytest.raises(ValueError, match="without a matching begin"):
        sections("<!-- qd:end claims:demo -->\n")
    with pytest.raises(ValueError, match="unknown README section 'tabel:demo'"):
        render_section("tabel:demo", tmp_path)
    with pytest.raises(FileNotFoundError, match="reference/nope/results/summary.csv does not exist.*'table:nope'"):
        render_section("table:nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="no benchmark records"):
        section_benchmarks(tmp_path)


def test_budget_direction():
    assert within_budget(1.2, 1.5, "lower") == "yes" and within_budget(1.8, 1.5, "lower") == "**no**"
    assert within_budget(0.95, 0.9, "higher") == "yes" and within_budget(0.8, 0.9, "higher") == "**no**"
    assert within_budget(1.0, None, "lower") == ""
    with pytest.raises(ValueError, match="lacks \\['value'\\]"):
        benchmark_record("b", "cmd", [{"what": "x"}], ROOT)


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_repository_documents_match_their_records(doc):
    """Every generated section of the repository's documents equals what its committed records give."""
    path = ROOT / doc
    if not path.exists():
        pytest.skip(f"{doc} is not in this checkout")
    text = path.read_text(encoding="utf-8")
    assert outdated(text, ROOT, doc) == [], f"run `qd readme` and commit {doc}"


def test_run_record_from_snakemake_logs_reaches_the_provenance(tmp_path):
    """scripts/run_record.py adds up the spans of the run's Snakemake logs (a resumed run has two; the
    pause between them does not count) and the provenance section prints the command and wall time."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_record", ROOT / "scripts" / "run_record.py")
    run_record = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_record)
    _records(tmp_path)
    first = tmp_path / "a.log"
    first.write_text("SNAKEMAKE\n[Thu Dec  3 08:52:12 2026]\nrule data:\n[Thu Dec  3 09:02:12 2026]\n"
                     "Finished jobid: 3 (Rule: data)\n1 of 3 steps (33%) done\n")
    second = tmp_path / "b.log"
    second.write_text("[Thu Dec  3 10:00:00 2026]\nrule x:\n[Thu Dec  3 10:20:00 2026]\nFinished jobid: 1 (Rule: x)\n"
                      "1 of 2 steps (50%) done\n[Thu Dec  3 10:30:30 2026]\nFinished jobid: 0 (Rule: all)\n"
                      "2 of 2 steps (100%) done\n")
    # the command as typed on the machine that made the record: its venv inside the project, data outside it
    typed = (f"{tmp_path}/.venv/bin/snakemake --cores 2 --config preset=demo "
             "'tasks={digits: {dataset: {root: /srv/someone/data}}}'")
    assert run_record.main(["--preset", "demo", "--command", typed, "--root", str(tmp_path),
                            str(first), str(second)]) == 0
    rec = json.loads((tmp_path / "results" / "demo" / "run.json").read_text())
    assert rec["wall_s"] == 600 + 1830 and rec["jobs"] == 1 + 2 and rec["logs"] == 2
    assert rec["started"] == "2026-12-03T08:52:12"
    command = (".venv/bin/snakemake --cores 2 --config preset=demo "
               "'tasks={digits: {dataset: {root: <your data folder>}}}'")
    assert rec["command"] == command
    assert render_section("provenance:demo", tmp_path).count("```") == 0  # not promoted yet: the reference has none
    promote("demo", tmp_path)
    text = render_section("provenance:demo", tmp_path)
    assert text.startswith("Record `reference/demo/results/`: ")
    # the first start stopped at 1 of 3 steps: its log ends at its last stamp, so the time is a lower bound
    assert rec["stopped"] == 1 and "took at least 40.5 min of wall time" in text
    assert "stopped starts: 1 of 2" in text and f"over 2 starts of:\n\n```bash\n{command}\n```" in text
    assert "`<your data folder>` stands for a path on the machine that made the record" in text
    assert str(tmp_path) not in text and "/srv/" not in text
    # a record written before the writer made commands portable: --rewrite changes its command only
    record = tmp_path / "reference" / "demo" / "results" / "run.json"
    record.write_text(json.dumps({**rec, "command": typed}, indent=1) + "\n")
    assert render_section("provenance:demo", tmp_path) == text  # the renderer passes it through the same code
    assert run_record.main(["--rewrite", "--root", str(tmp_path), str(record)]) == 0
    assert json.loads(record.read_text()) == rec
    # a log that did not finish is refused
    with pytest.raises(SystemExit, match="did not finish"):
        run_record.main(["--preset", "demo", "--command", "c", "--root", str(tmp_path), str(first)])
    # a start stopped while its first job ran (one stamp) counts 0 s; a finished log needs two stamps
    one = tmp_path / "c.log"
    one.write_text("[Thu Dec  3 07:00:00 2026]\nrule teacher:\n")
    assert run_record.main(["--preset", "demo", "--command", "c", "--root", str(tmp_path), str(one), str(first),
                            str(second)]) == 0
    rec = json.loads((tmp_path / "results" / "demo" / "run.json").read_text())
    assert rec["wall_s"] == 600 + 1830 and rec["stopped"] == 2 and rec["started"] == "2026-12-03T07:00:00"
    one.write_text("[Thu Dec  3 07:00:00 2026]\n2 of 2 steps (100%) done\n")
    with pytest.raises(SystemExit, match="too few Snakemake timestamps"):
        run_record.main(["--preset", "demo", "--command", "c", "--root", str(tmp_path), str(one)])


def test_save_benchmark_records_the_command_that_reproduces_the_run(tmp_path):
    rows = [{"what": "QD step / FP step", "value": 1.04, "unit": "x", "budget": 1.1}]
    path = save_benchmark("train_step", "/anywhere/benchmarks/bench_train_step.py", ["--rounds", "3", "--record"],
                          rows, tmp_path)
    assert path == tmp_path / "benchmarks" / "results" / "train_step.json"
    rec = json.loads(path.read_text())
    assert rec["command"] == ".venv/bin/python benchmarks/bench_train_step.py --rounds 3 --record"
    assert rec["rows"] == rows and rec["benchmark"] == "train_step"
    assert "| QD step / FP step | 1.04 x | 1.1 x | yes |" in section_benchmarks(tmp_path, "train_step")


@pytest.mark.parametrize("typed, portable", [
    ("snakemake --cores 2 --config preset=cifar10-cpu 'tasks={cifar10: {dataset: {root: /srv/datasets}}}'",
     "snakemake --cores 2 --config preset=cifar10-cpu 'tasks={cifar10: {dataset: {root: <your data folder>}}}'"),
    ("qd data --config config/config.yaml --set tasks.cifar10.dataset.root=/mnt/x/cifar",
     "qd data --config config/config.yaml --set tasks.cifar10.dataset.root=<your data folder>"),
    ("{P}/.venv/bin/snakemake --cores 2 --configfile {P}/config/presets/demo.yaml   # 2/3 of it, see https://a.b/c",
     ".venv/bin/snakemake --cores 2 --configfile config/presets/demo.yaml   # 2/3 of it, see https://a.b/c"),
    ("cd {P} && snakemake --directory /scratch/run --cores 2", "cd . && snakemake --directory /scratch/run --cores 2"),
])
def test_portable_command_names_no_path_of_the_machine(typed, portable, tmp_path):
    project = tmp_path / "proj"
    typed, portable = typed.replace("{P}", str(project)), portable.replace("{P}", str(project))
    if "/scratch/" in typed:  # a path that is the value of no key: a generic placeholder
        portable = portable.replace("/scratch/run", "<your path>")
    assert portable_command(typed, project) == portable


def test_reference_holds_only_record_files_and_replaces_the_old_one(tmp_path):
    """`qd reference` copies summary, claims, latency, run.json, tables and figures (never a run folder,
    weights, a log or a spec) and leaves no file of the previous reference behind."""
    from qd.report.reference import main as reference_main

    results, figures = tmp_path / "results" / "p", tmp_path / "figures" / "p"
    assert reference_main(["--preset", "p", "--root", str(tmp_path)]) == 1  # no finished run: refused
    for name in ("summary.csv", "claims.md", "claims.csv", "latency.csv", "report.log", "tables/t_acc.md",
                 "tables/t_acc.csv", ".specs/abc.json", "t/s/qd/b2-d256/seed0/model.qda",
                 "t/s/qd/b2-d256/seed0/metrics.json", "t/data/split.pt"):
        (results / name).parent.mkdir(parents=True, exist_ok=True)
        (results / name).write_text(name)
    figures.mkdir(parents=True)
    (figures / "t_acc_vs_bits.png").write_text("png")
    stale = tmp_path / "reference" / "p" / "results" / "tables" / "gone.md"
    stale.parent.mkdir(parents=True)
    stale.write_text("an old table")
    assert reference_main(["--preset", "p", "--root", str(tmp_path)]) == 0
    ref = tmp_path / "reference" / "p"
    assert sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file()) == [
        "figures/t_acc_vs_bits.png", "results/claims.csv", "results/claims.md", "results/latency.csv",
        "results/summary.csv", "results/tables/t_acc.csv", "results/tables/t_acc.md"]
    assert (ref / "results" / "summary.csv").read_text() == "summary.csv"
    (results / "run.json").write_text(json.dumps({"preset": "other"}))
    with pytest.raises(ValueError, match="records preset 'other'"):
        promote("p", tmp_path)


def test_runs_write_where_git_ignores_and_the_references_are_tracked():
    """A run writes results/<preset>/ and figures/<preset>/ only: both ignored, so a user's demo leaves
    `git status` clean; the reference records the README reads are tracked, with no machine path."""
    import subprocess

    from qd.report import report_files

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = [str(p) for p in report_files(Path("results/demo"), Path("figures/demo"), ["digits"], True)]
    git = subprocess.run(["git", "check-ignore", "--no-index", *outputs, "results/demo/run.json",
                          "results/demo/digits/teacher/fp/fp32/seed0/model.qda"], cwd=ROOT, capture_output=True,
                         text=True)
    assert set(git.stdout.split()) == {*outputs, "results/demo/run.json",
                                       "results/demo/digits/teacher/fp/fp32/seed0/model.qda"}
    tracked = subprocess.run(["git", "ls-files", "results", "figures", "reference"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert tracked and all(f.startswith("reference/") for f in tracked), "a run's folders hold tracked files"
    for preset in ("demo", "cifar10-cpu", "multi30k-cpu"):
        run = ROOT / "reference" / preset / "results" / "run.json"
        if run.exists():
            command = json.loads(run.read_text())["command"]
            assert portable_command(command, ROOT) == command, f"{run}: a path of the machine that made it"
