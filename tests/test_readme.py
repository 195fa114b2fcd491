"""README sections generated from committed records: rendering from synthetic records, the check
that notices an edited number, and the repository's own README and benchmarks/README against the
records committed with them."""
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

ROOT = Path(__file__).resolve().parents[1]


def _records(root: Path) -> None:
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
    with pytest.raises(FileNotFoundError, match="results/nope/summary.csv does not exist.*'table:nope'"):
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
    assert run_record.main(["--preset", "demo", "--command", "snakemake --cores 2", "--root", str(tmp_path),
                            str(first), str(second)]) == 0
    rec = json.loads((tmp_path / "results" / "demo" / "run.json").read_text())
    assert rec["wall_s"] == 600 + 1830 and rec["jobs"] == 1 + 2 and rec["logs"] == 2
    assert rec["started"] == "2026-12-03T08:52:12"
    text = render_section("provenance:demo", tmp_path)
    assert "took 40.5 min of wall time" in text and "over 2 starts of:\n\n```bash\nsnakemake --cores 2\n```" in text
    # a log that did not finish is refused
    with pytest.raises(SystemExit, match="did not finish"):
        run_record.main(["--preset", "demo", "--command", "c", "--root", str(tmp_path), str(first)])


def test_save_benchmark_records_the_command_that_reproduces_the_run(tmp_path):
    rows = [{"what": "QD step / FP step", "value": 1.04, "unit": "x", "budget": 1.1}]
    path = save_benchmark("train_step", "/anywhere/benchmarks/bench_train_step.py", ["--rounds", "3", "--record"],
                          rows, tmp_path)
    assert path == tmp_path / "benchmarks" / "results" / "train_step.json"
    rec = json.loads(path.read_text())
    assert rec["command"] == ".venv/bin/python benchmarks/bench_train_step.py --rounds 3 --record"
    assert rec["rows"] == rows and rec["benchmark"] == "train_step"
    assert "| QD step / FP step | 1.04 x | 1.1 x | yes |" in section_benchmarks(tmp_path, "train_step")
