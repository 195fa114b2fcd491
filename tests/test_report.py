"""The report's tables and files: the paper's numbers file, the paper-layout join (every recovered cell
lands in its cell; a cell without a paper number is blank, not zero), the task's own layout, and the
whole report built from synthetic run folders of a classification and a translation task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_report_synthetic import grid_cells, write_grid, write_run

from qd.report import report_files, task_outputs
from qd.report.build import build_report
from qd.report.collect import aggregate, collect, labels_by_method
from qd.report.figures import pareto_front
from qd.report.paper import PaperTargets, classification_layout, paper_join, read_targets, translation_layout
from qd.report.tables import accuracy_table, human_bytes, mean_std

ROOT = Path(__file__).resolve().parents[1]
TARGETS_FILE = ROOT / "config" / "paper_targets.csv"
TARGETS = PaperTargets.read(TARGETS_FILE)


# ---------------------------------------------------------------------- the paper's numbers
def test_targets_hold_every_recovered_number_of_the_notes():
    t = read_targets(TARGETS_FILE)
    v = TARGETS.value
    # Table A: teacher, three students x (2 FP + PM/PM-bucket/QD at 2/4/8 + DQ at 2/4)
    a = t[(t["table"] == "A") & (t["metric"] == "accuracy")]
    assert a["value"].notna().sum() == 1 + 3 * (2 + 3 * 3 + 2)
    assert v("cifar10", "teacher", "fp") == 89.71
    assert (v("cifar10", "student1", "fp"), v("cifar10", "student1", "distill")) == (84.5, 88.8)
    assert v("cifar10", "student2", "pm", 4, None) == 68.05 and v("cifar10", "student2", "pm", 4, 256) == 81.96
    assert v("cifar10", "student3", "dq", 2, 256) == 57.84 and v("cifar10", "student1", "qd", 8, 256) == 88.82
    assert v("cifar10", "student1", "dq", 8, 256) is None  # the paper prints no DQ cell at 8 bits
    # Table B: the deeper student's 92.30 is PM with buckets; QD at 4 bits is 92.17
    assert v("cifar10", "deeper", "pm", 4, 256) == 92.30 and v("cifar10", "deeper", "qd", 4, 256) == 92.17
    assert (v("cifar10", "deeper", "fp"), v("cifar10", "deeper", "distill")) == (93.22, 92.6)
    assert v("cifar10", "deeper", "pm", 2, None) == 12.60
    # Table C: accuracy and size of every cell
    assert v("cifar100", "wrn-28-10", "fp") == 77.21 and v("cifar100", "wrn-16-10", "distill") == 77.24
    assert v("cifar100", "wrn-16-10", "dq", 4, 256) == 77.07
    assert v("cifar100", "wrn-16-10", "dq", 4, 256, metric="size_mb") == 12.4
    assert v("cifar100", "wrn-16-10", "pm", 2, None, metric="size_mb") == 3.18
    assert (t[(t["table"] == "C") & (t["metric"] == "size_mb")]["value"].notna()).sum() == 1 + 1 + 8
    # Table D: top-1, top-5, parameters and size
    assert v("imagenet", "2xresnet18", "qd", 4, 256) == 73.10 and v("imagenet", "2xresnet18", "qd", 4, 256,
                                                                      metric="top5") == 91.17
    assert v("imagenet", "resnet50", "fp", metric="size_mb") == 102.2
    assert v("imagenet", "2xresnet34", "qd", 4, 256, metric="params_m") == 86.11
    assert TARGETS.teacher_of("imagenet", "2xresnet34") == "resnet50"
    # speed (notes 3.3), read by claim 2
    assert [TARGETS.speed(m) for m in ("resnet34", "resnet18", "2xresnet18")] == [263, 169, 169]
    # translation tables: rows present, every value NR (a user with the PDF fills them in here)
    e = t[t["table"].isin(["E", "F"])]
    assert len(e) > 0 and e["value"].isna().all() and set(e["metric"]) >= {"bleu", "ppl"}
    assert not TARGETS.has("onmt-integ") and TARGETS.has("cifar10")


def test_bad_targets_file_names_the_cell(tmp_path):
    bad = tmp_path / "t.csv"
    cell = "cifar10,teacher,teacher,,fp,,,accuracy,"
    text = TARGETS_FILE.read_text().replace(cell + "89.71", cell + "about 90")
    bad.write_text(text)
    with pytest.raises(ValueError, match="about 90.*cifar10/teacher/fp/accuracy"):
        read_targets(bad)


# ---------------------------------------------------------------------- the paper-layout join
def _md_table(md: str, heading: str) -> pd.DataFrame:
    """The Markdown table that follows ``heading``."""
    block = md.split(heading, 1)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    lines = lines[:next((i for i, ln in enumerate(lines[2:], 2) if not ln.startswith("|")), len(lines))]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    end = next((i for i, r in enumerate(rows[2:], 2) if r[0] == "method"), len(rows))
    return pd.DataFrame(rows[2:end], columns=rows[0]).set_index("method")


def _cifar_agg(tmp_path, extra=()):
    cells = {("teacher", "fp", None, None): 90.0}
    for s in ("student1", "student2", "student3"):
        cells.update({k: v for k, v in grid_cells(student=s).items() if k[0] == s})
    cells.update(dict(extra))
    write_grid(tmp_path, cells, n=200, dataset="cifar10")
    return aggregate(collect(tmp_path))


def test_every_recovered_cell_lands_in_its_cell(tmp_path):
    agg = _cifar_agg(tmp_path, {("student1", "qt", 4, 256): 80.0, ("student1", "dq", 8, 256): 85.0})
    labels = labels_by_method(agg)
    join = paper_join(agg, TARGETS, "cifar10", "t", ["accuracy"])
    md = classification_layout(join, ["student1", "student2", "student3"], "teacher", labels)
    t = read_targets(TARGETS_FILE)
    cells = t[(t["table"] == "A") & (t["metric"] == "accuracy") & t["bits"].notna()]
    for r in cells.itertuples():
        table = _md_table(md, f"### `{r.model}`")
        label = labels[(r.method, None if pd.isna(r.bucket) else int(r.bucket))]
        assert table.loc[label, f"{int(r.bits)}-bit paper"] == f"{r.value:.2f}", (r.model, label, r.bits)
    # the FP accuracies under each student's name, and the teacher on top
    assert "FP normal: ours 88.00 (n=1), paper 84.50 (+3.50)" in md
    assert "FP distilled: ours 91.00 (n=1), paper 88.80" in md
    assert md.startswith("**Teacher `teacher`**: ours 90.00 (n=1); paper 89.71; difference +0.29")
    s1 = _md_table(md, "### `student1`")
    # measured, not in the paper: blank paper and difference, never 0
    assert s1.loc["Quantized training", "4-bit ours"] == "80.00 (n=1)"
    assert s1.loc["Quantized training", "4-bit paper"] == "" and s1.loc["Quantized training", "4-bit Δ"] == ""
    assert s1.loc["Differentiable quantization", "8-bit paper"] == ""
    # in the paper, not measured (this grid has no 8-bit runs): blank ours
    assert s1.loc["Quantized distillation", "8-bit ours"] == ""
    assert s1.loc["Quantized distillation", "8-bit paper"] == "88.82"
    assert s1.loc["Quantized distillation", "4-bit Δ"] == f"{95.0 - 88.00:+.2f}"
    row = join[(join["model"] == "student1") & (join["method"] == "qt")].iloc[0]
    assert pd.isna(row["paper"]) and pd.isna(row["difference"])


def test_translation_layout_shows_nr_beside_ours(tmp_path):
    for model, method, bits in (("teacher", "fp", None), ("student1", "distill", None), ("student1", "qd", 4)):
        write_run(tmp_path, "mt", model, method, bits, 256 if bits else None, kind="translation", dataset="onmt-integ",
                  metrics={"bleu": 25.0, "ppl": 4.0})
    agg = aggregate(collect(tmp_path))
    join = paper_join(agg, TARGETS, "onmt-integ", "mt", ["bleu", "ppl"])
    md = translation_layout(join, ["teacher", "student1", "student2"], labels_by_method(agg))
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "ours 25.00 / 4.00; paper NR / NR" in lines["student1"]
    assert "paper NR / NR" in lines["student2"] and "ours" not in lines["student2"]
    header = [c.strip() for c in lines["model"].strip("|").split("|")]
    assert header[:3] == ["model", "FP normal", "FP distilled"] and "Quantized distillation 4-bit" in header


# ---------------------------------------------------------------------- own layout, helpers
def test_cells_and_units(tmp_path):
    assert mean_std(92.0, 2.0, 3) == "92.00 ± 2.00 (n=3)"
    assert mean_std(92.0, float("nan"), 1) == "92.00"
    assert [human_bytes(n) for n in (950, 1500, 2_500_000)] == ["950 B", "1.5 kB", "2.5 MB"]
    write_grid(tmp_path, grid_cells(), n=100)
    table = accuracy_table(aggregate(collect(tmp_path)), "t", ["s"])
    assert table.loc["Quantized distillation", "s · 4-bit"] == "95.00 · 1 kB"
    assert table.loc["FP normal", "s · fp32"] == "88.00 · 1 kB"
    assert list(table.columns) == ["s · fp32", "s · 2-bit", "s · 4-bit"]
    assert table.loc["FP normal", "s · 2-bit"] == ""


def test_pareto_front_by_hand():
    front = pareto_front(pd.Series([1.0, 2.0, 3.0, 4.0, 2.0]), pd.Series([50.0, 60.0, 55.0, 70.0, 40.0]))
    assert list(zip(front["size"], front["acc"])) == [(1.0, 50.0), (2.0, 60.0), (4.0, 70.0)]
    # an error (lower is better): the smallest model's 0.5 is beaten only by a larger one with less
    front = pareto_front(pd.Series([1.0, 2.0, 3.0, 4.0]), pd.Series([0.5, 0.6, 0.3, 0.4]), higher_is_better=False)
    assert list(zip(front["size"], front["acc"])) == [(1.0, 0.5), (3.0, 0.3)]


def test_report_files_follow_the_task_kind(tmp_path):
    assert task_outputs("classification") == (("accuracy", "sizes", "paper", "compare", "integer", "noise"),
                                               ("accuracy_vs_bits", "accuracy_vs_size", "training_curves",
                                                "training_hours"))
    assert task_outputs("translation") == (("bleu", "sizes", "paper", "compare"),
                                           ("bleu_vs_bits", "bleu_vs_size", "training_curves", "training_hours"))
    files = report_files(tmp_path / "r", tmp_path / "f", {"digits": {"kind": "classification"},
                                                          "numbers": {"kind": "translation"}}, True)
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    assert {"r/summary.csv", "r/claims.md", "r/claims.csv", "r/tables/latency_depth.md", "f/latency_depth.png",
            "r/tables/digits_integer.csv", "r/tables/numbers_bleu.md", "f/numbers_bleu_vs_size.pdf",
            "f/digits_accuracy_vs_bits.png"} <= names
    assert "r/tables/numbers_integer.md" not in names
    # the old call (a list of names) still means classification tasks
    assert report_files(tmp_path, tmp_path, ["digits"]) == report_files(tmp_path, tmp_path, {"digits": {}})


def test_a_run_time_is_at_least_its_epochs_seconds(tmp_path):
    """A row whose wall_time counted only a resumed run's last process (10 s here) gets the seconds of all
    its epochs (history.csv: 900 + 1800 + 900); one that counts them already keeps its own."""
    timed = pd.DataFrame({"epoch": [1, 2, 3], "test_accuracy": [50.0, 60.0, 70.0], "seconds": [900, 1800, 900]})
    write_run(tmp_path, "t", "s", "fp", history=timed)
    write_run(tmp_path, "t", "s", "distill", history=timed, metrics={"wall_time": 4000.0})
    write_run(tmp_path, "t", "teacher", "fp")  # a history without seconds: wall_time as written
    times = collect(tmp_path).set_index(["model", "method"])["wall_time"]
    assert times[("s", "fp")] == 3600.0 and times[("s", "distill")] == 4000.0 and times[("teacher", "fp")] == 10.0


def test_histories_count_core_hours_of_each_run(tmp_path):
    """Core-hours up to each epoch: the epochs' seconds summed, times the threads in the run's spec (a
    run without a spec counts one thread)."""
    from qd.report.build import histories

    timed = pd.DataFrame({"epoch": [1, 2, 3], "test_accuracy": [50.0, 60.0, 70.0], "seconds": [900, 1800, 900]})
    teacher = write_run(tmp_path, "t", "teacher", "fp", history=timed)
    write_run(tmp_path, "t", "s", "fp", history=timed)
    (tmp_path / teacher / "spec.json").write_text(json.dumps({"threads": 2}))
    df = collect(tmp_path)
    h = histories(df, tmp_path, aggregate(df)).set_index(["model", "epoch"])["core_hours"]
    assert h["teacher"].tolist() == pytest.approx([0.5, 1.5, 2.0])
    assert h["s"].tolist() == pytest.approx([0.25, 0.75, 1.0])


# ---------------------------------------------------------------------- the whole report
def _classification_folder(results: Path) -> None:
    """Teacher and one student with every method, saved models and per-example outputs."""
    from qd.artefact import export_artefact
    from qd.data import Splits, save_splits
    from qd.models.convnet import convnet
    from qd.quant import decode, encode_nonuniform, encode_uniform, uniform_points

    g = torch.Generator().manual_seed(0)
    meta = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    x = torch.randn(300, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (300,), generator=g)
    save_splits(Splits((x[:10], y[:10]), (x[:10], y[:10]), (x, y), {"dataset": "digits", **meta}),
                results / "t" / "data" / "split.pt")
    grid = [("teacher", "fp", None, None), ("s", "fp", None, None), ("s", "distill", None, None)]
    grid += [("s", m, b, bk) for b in (2, 4) for m, bk in (("pm", 256), ("pm", None), ("qd", 256), ("dq", 256))]
    torch.manual_seed(0)
    distilled = convnet("student3", width=0.5, **meta)
    for i, (model, method, bits, bucket) in enumerate(grid):
        spec = {"name": "student3" if model == "s" else "teacher", "width": 0.5 if model == "s" else 0.125}
        torch.manual_seed(i)
        net = (convnet(spec["name"], width=spec["width"], in_channels=1, num_classes=10, image_size=8)
               if method in ("fp", "qd") else __import__("copy").deepcopy(distilled)).eval()
        codes = {}
        with torch.no_grad():
            for name, p in net.named_parameters():
                if bits and name.endswith("weight") and p.dim() > 1:
                    codes[name] = (encode_nonuniform(p, uniform_points(2**bits) ** 1.5, bucket) if method == "dq"
                                   else encode_uniform(p, bits, bucket))
                    p.copy_(decode(codes[name]))
            pred = net(x).argmax(1).numpy()
        header = {"model": spec, "shape": meta, "model_meta": meta, "kind": "classification", "run": "", "task": "t",
                  "method": method, "bits": bits, "bucket_size": bucket}
        run = write_run(results, "t", model, method, bits, bucket, correct=pred == y.numpy(), dataset="digits",
                        size_on_disk=1.0, size_fp32=1.0)
        size = export_artefact(results / run / "model.qda", net.state_dict(), codes, header)
        row = json.loads((results / run / "metrics.json").read_text())
        # what the run's spec resolves from the method: DQ's points are not an even grid
        row.update(size_on_disk=size, size_fp32=4.0 * sum(p.numel() for p in net.parameters()),
                   size_analytic=0.8 * size, uniform_grid=(method != "dq") if bits else None)
        (results / run / "metrics.json").write_text(json.dumps(row))
        pd.DataFrame({"index": range(300), "label": y.numpy(), "prediction": pred}).to_csv(
            results / run / "test_outputs.csv", index=False)


@pytest.mark.slow
def test_build_report_on_a_classification_folder(tmp_path):
    results, figures = tmp_path / "results" / "syn", tmp_path / "figures" / "syn"
    _classification_folder(results)
    cfg = {"report": {"bootstrap_samples": 300, "integer_examples": 60, "noise_examples": 60, "noise_units": 16}}
    files = build_report(results, figures, cfg, TARGETS_FILE)
    assert files == report_files(results, figures, {"t": "classification"})
    assert all(p.exists() for p in files), [p for p in files if not p.exists()]
    claims = pd.read_csv(results / "claims.csv")
    assert list(claims["claim"].astype(str)) == ["1", "2", "3a", "3b", "3c", "4a", "4b", "5", "6", "7"]
    v = dict(zip(claims["claim"].astype(str), claims["verdict"]))
    assert v["2"] == v["7"] == "NOT TESTED"
    assert v["5"] in ("PASS", "INCONCLUSIVE", "FAIL") and v["6"] in ("PASS", "INCONCLUSIVE", "FAIL")
    integer = pd.read_csv(results / "tables" / "t_integer.csv")
    assert len(integer) == 6  # pm x2, qd at 2 and 4 bits; DQ's non-uniform points are not the claim's students
    # buckets of 256 straddle this student's channels; one bucket per tensor (no bucketing) does not
    assert (integer.loc[integer["bucket"].notna(), "split_channels"] > 0).all()
    assert (integer.loc[integer["bucket"].isna(), "split_channels"] == 0).all()
    noise = pd.read_csv(results / "tables" / "t_noise.csv")
    assert set(noise["bits"]) == {2, 4} and noise["layer"].nunique() == 6
    md = (results / "claims.md").read_text()
    assert "| 5 |" in md and "### Claim 5" in md and "integer path" in md
    # claim 5's line names the model that settles it: a failing one under FAIL
    line5, fails = claims.loc[claims["claim"].astype(str) == "5", "summary"].item(), (integer["verdict"] == "FAIL").sum()
    assert f"{(integer['verdict'] == 'PASS').sum()} of 6 models hold, {fails} fail; " in line5
    assert ("failing " if fails else "weakest ") in line5 and (v["5"] == "FAIL") == (fails > 0)
    assert "prints no numbers for dataset `digits`" in (results / "tables" / "t_paper.md").read_text()
    summary = pd.read_csv(results / "summary.csv")
    assert set(summary["kind"]) == {"classification"} and len(summary) == 11


@pytest.mark.slow
def test_build_report_on_a_translation_folder(tmp_path):
    import sacrebleu

    results, figures = tmp_path / "results" / "syn", tmp_path / "figures" / "syn"
    refs = [f"sentence number {i} is short" for i in range(50)]
    (results / "mt" / "data").mkdir(parents=True)
    (results / "mt" / "data" / "test_references.txt").write_text("\n".join(refs) + "\n")
    rng = np.random.default_rng(0)
    for model, method, bits in (("teacher", "fp", None), ("s", "fp", None), ("s", "distill", None),
                                ("s", "pm", 4), ("s", "qd", 4), ("s", "dq", 4)):
        hyps = [r if rng.random() < 0.8 else r.replace("short", "long") for r in refs]
        history = pd.DataFrame({"epoch": [1, 2], "train_loss": [3.0, 2.0], "val_ppl": [9.0, 6.0],
                                "test_ppl": [9.5, 6.1]})
        write_run(results, "mt", model, method, bits, 256 if bits else None, kind="translation", dataset="numbers",
                  hyps=hyps, history=history,
                  metrics={"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score, "ppl": 6.1, "n_test": 50})
    files = build_report(results, figures, {"report": {"bootstrap_samples": 200}}, TARGETS_FILE)
    assert files == report_files(results, figures, {"mt": "translation"})
    assert all(p.exists() for p in files)
    claims = pd.read_csv(results / "claims.csv")
    seven = claims[claims["claim"].astype(str) == "7"].iloc[0]
    assert seven["verdict"] in ("PASS", "INCONCLUSIVE", "FAIL") and seven["n_test"] == 50
    bleu = pd.read_csv(results / "tables" / "mt_bleu.csv", index_col=0)
    assert " ppl · " in bleu.loc["Quantized distillation", "s · 4-bit"]


def test_metric_vs_bits_draws_more_methods_than_it_has_markers(tmp_path, monkeypatch):
    """The demo plots ten quantized methods per student; markers repeat instead of running out, and every
    method's line carries its own means."""
    import qd.report.figures as figures
    from qd.report.figures import MARKERS, metric_vs_bits

    drawn = []
    save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, stem: (drawn.append(fig.axes[0]), save(fig, stem))[1])

    rows = [{"task": "t", "model": "teacher", "method": "fp", "label": "Teacher", "bits": None,
             "accuracy_mean": 90.0, "accuracy_std": None}]
    rows += [{"task": "t", "model": "s", "method": f"m{i}", "label": f"method {i}", "bits": b,
              "accuracy_mean": 50.0 + i + b, "accuracy_std": None}
             for i in range(len(MARKERS) + 3) for b in (2, 4)]
    agg = pd.DataFrame(rows)
    agg["bits"] = agg["bits"].astype("Int64")
    paths = metric_vs_bits(agg, "t", "teacher", ["s"], tmp_path / "t_accuracy_vs_bits")
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in paths)
    lines = [c.lines[0] for c in drawn[0].containers]  # one errorbar per quantized method, in order
    n = len(MARKERS) + 3
    assert [ln.get_marker() for ln in lines] == [MARKERS[i % len(MARKERS)] for i in range(n)]
    assert [list(ln.get_ydata()) for ln in lines] == [[52.0 + i, 54.0 + i] for i in range(n)]


def test_qd_compare_without_run_folders_says_what_is_missing(tmp_path, capsys):
    """A fresh clone has the records but no run folders: qd compare names the folder and the way out."""
    from qd.report.compare import main as compare_main

    (tmp_path / "results" / "demo" / "tables").mkdir(parents=True)
    assert compare_main(["--method", "lsq", "--results", str(tmp_path / "results" / "demo")]) == 1
    err = capsys.readouterr().err
    assert "no finished runs under" in err and "run the workflow first" in err and "_compare.md" in err


LABELS = {"lsq": "LSQ", "qd": "QD as configured"}  # what the runs' specs resolved (a config override for qd)
REGRESSION_MODULE = '''
from qd.tasks import TaskInfo

INFO = TaskInfo("regress", "regress_task:Regress", "mse", False, "mse", False, ("mse",), "test MSE")
'''


@pytest.mark.slow
def test_build_report_on_a_task_kind_of_its_own(tmp_path, monkeypatch):
    """A kind the suite does not ship (mean squared error, lower is better, no per-example outputs, no
    weight checks, not recurrent) flows through the summary, tables, figures and claims; its claims read
    lower as better and fall back to the spread over seeds."""
    (tmp_path / "regress_task.py").write_text(REGRESSION_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    results, figures = tmp_path / "results" / "syn", tmp_path / "figures" / "syn"
    mse = {("teacher", "fp", None, None): 0.20, ("s", "fp", None, None): 1.00, ("s", "distill", None, None): 0.50,
           ("s", "pm", 4, 256): 0.60, ("s", "pm", 4, None): 0.90, ("s", "qd", 4, 256): 0.52,
           ("s", "dq", 4, 256): 0.55, ("s", "lsq", 4, 256): 0.58}
    for (model, method, bits, bucket), value in mse.items():
        for seed in (0, 1):
            history = pd.DataFrame({"epoch": [1, 2], "train_loss": [2.0, 1.0], "test_mse": [2 * value, value]})
            write_run(results, "r", model, method, bits, bucket, seed, kind="regress", dataset="waves",
                      history=history, metrics={"mse": value + 0.01 * (2 * seed - 1), "primary_metric": "mse",
                                                "task_entry": "regress_task:Regress", "n_test": 100,
                                                "method_label": LABELS.get(method)})
    files = build_report(results, figures, {"report": {"bootstrap_samples": 200}}, TARGETS_FILE)
    assert files == report_files(results, figures, {"r": {"kind": "regress", "entry": "regress_task:Regress"}})
    assert all(p.exists() for p in files), [p for p in files if not p.exists()]
    assert "r_integer.md" not in {p.name for p in files} and (results / "tables" / "r_mse.md").exists()
    claims = pd.read_csv(results / "claims.csv", dtype={"claim": str}).set_index("claim")
    # distilled 0.50 against normal 1.00: lower is better, so distillation helps by +0.50
    assert claims.loc["3a", "verdict"] == "PASS" and claims.loc["3a", "estimate"] == pytest.approx(0.5)
    assert "bootstrap over seeds" in (results / "claims.md").read_text()
    assert claims.loc["3c", "verdict"] == "PASS"  # bucketed PM 0.60 below unbucketed 0.90
    assert (claims.loc[["5", "6", "7"], "verdict"] == "NOT TESTED").all()
    compare = pd.read_csv(results / "tables" / "r_compare.csv")
    assert list(compare["method"]) == ["lsq"] and compare.loc[0, "vs qd"] == "no per-example outputs"
    # labels come from the rows: a config's override of the paper's method's label reaches the table
    table = pd.read_csv(results / "tables" / "r_mse.csv", index_col=0)
    assert table.loc["LSQ", "s · 4-bit"].startswith("0.58 ± 0.01 (n=2)")
    assert table.loc["QD as configured", "s · 4-bit"].startswith("0.52 ± 0.01 (n=2)")
    assert "Quantized distillation" not in table.index
