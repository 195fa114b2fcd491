"""Cost estimates (qd/cost.py, config/epoch_times.csv): a hand-computed plan, the table's checks and
honesty (estimates say so), the paper grids' totals, and the FLOP counter the estimates scale by."""
from __future__ import annotations

import subprocess
import sys

import pytest

import qd.cost as cost
from conftest import ROOT

TABLE = ROOT / "config" / "epoch_times.csv"
HEADER = ",".join(cost.COLUMNS)


def _table(tmp_path, *rows):
    path = tmp_path / "times.csv"
    path.write_text("# a comment line\n" + HEADER + "\n" + "\n".join(rows) + "\n")
    return path


def test_a_plan_by_hand(tmp_path):
    path = _table(tmp_path,
                  "S,toy,gpu,8,100,10,measured,here",
                  "T,toy,gpu,8,100,30,estimate,published x flops; not measured")
    table = cost.read_epoch_times(path)
    runs = [cost.PlannedRun("toy", "toy", "T", "fp", 2),  # 2 x 30 = 60 s
            cost.PlannedRun("toy", "toy", "S", "qd", 3, teacher="T"),  # 3 x (10 + 30/3) = 60 s
            cost.PlannedRun("toy", "toy", "S", "dq", 1),  # its own fp copy: 10 + 10/3 s
            cost.PlannedRun("toy", "toy", "S", "pm", 0),  # nothing to train
            cost.PlannedRun("toy", "toy", "S", "fp", 1, gpus=4, eval_share=0.3)]  # 10 x (1 + 0.3/3) = 11 s
    plan = cost.plan_cost(runs, table, "gpu")
    assert [plan.seconds[i] for i in range(5)] == pytest.approx([60, 60, 10 + 10 / 3, 0, 11])
    assert (plan.n_runs, plan.epochs) == (5, 7)
    assert plan.gpu_hours == pytest.approx((60 + 60 + 10 + 10 / 3 + 11) / 3600)
    assert plan.wall_hours == pytest.approx((60 + 60 + 10 + 10 / 3 + 11 / 4) / 3600)
    assert plan.estimated == {0, 1} and plan.missing == []  # the teacher's row is an estimate
    text = cost.format_plan(plan, "toy")
    assert text.startswith("toy on gpu: 5 runs, 7 epochs, 0.0 GPU hours")
    assert f"{100 * 120 / (144 + 1 / 3):.0f}% of the GPU hours rest on estimated epoch times" in text
    assert "  toy          S            qd            1       3      0.0 *" in text


def test_missing_rows_are_named_and_not_counted(tmp_path):
    table = cost.read_epoch_times(_table(tmp_path, "S,toy,gpu,8,100,10,measured,here"))
    runs = [cost.PlannedRun("toy", "toy", "S", "fp", 2), cost.PlannedRun("toy", "toy", "S", "distill", 2, teacher="T"),
            cost.PlannedRun("toy", "toy", "U", "fp", 1)]
    plan = cost.plan_cost(runs, table, "gpu")
    assert plan.seconds == {0: 20} and plan.missing == [("T", "toy"), ("U", "toy")]
    text = cost.format_plan(plan)
    assert "PARTIAL: 2 of 3 runs have no epoch time on gpu" in text and "lower bound" in text
    assert "no epoch time for T on toy, U on toy on gpu" in text
    assert "  toy          S            distill       1       2        ?" in text
    assert cost.plan_cost(runs, table, "other").missing == [("S", "toy"), ("T", "toy"), ("U", "toy")]


def test_measured_rows_win_over_estimates_and_later_over_earlier(tmp_path):
    table = cost.read_epoch_times(_table(tmp_path,
                                         "S,toy,gpu,8,100,10,measured,first",
                                         "S,toy,gpu,8,100,20,estimate,guess; not measured",
                                         "S,toy,gpu,8,100,12,measured,second"))
    assert cost.lookup(table, "S", "toy", "gpu").source == "second"
    assert cost.lookup(table, "S", "toy", "cpu") is None


@pytest.mark.parametrize("row,message", [
    ("S,toy,gpu,8,100,10,guessed,x", "basis 'guessed' must be one of"),
    ("S,toy,gpu,eight,100,10,measured,x", "data row 1: invalid literal"),
    ("S,toy,gpu,8,100,0,measured,x", "seconds_per_epoch must be positive"),
])
def test_bad_rows_name_their_line(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        cost.read_epoch_times(_table(tmp_path, row))


def test_bad_header_and_missing_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,dataset,seconds\nS,toy,3\n")
    with pytest.raises(ValueError, match="lacks the column.*device"):
        cost.read_epoch_times(bad)
    with pytest.raises(FileNotFoundError, match="epoch-time table .*nothing.csv does not exist"):
        cost.read_epoch_times(tmp_path / "nothing.csv")


def test_the_shipped_table_labels_every_number():
    rows = cost.read_epoch_times(TABLE)
    assert rows
    for r in rows:
        if r.basis == "estimate":
            assert "not measured" in r.source and "img/s" in r.source, r  # its basis is stated
        else:
            # how and where it was measured: a step benchmark (qd.cost measure) or a reference record's wall time
            assert ("median of" in r.source or "wall time of reference/" in r.source) and r.device in r.source, r
    assert all(r.basis == "estimate" for r in rows if r.device in ("A100-80GB", "V100-16GB"))
    # the ResNet-50 reference row is the published throughput itself: 1,153,050 images at 938 img/s
    r50 = cost.lookup(rows, "resnet50", "imagenet", "A100-80GB")
    assert r50.seconds_per_epoch == round(1_153_050 / 938, 1)


def test_paper_presets_on_the_shipped_table(capsys):
    root = TABLE.parent
    cost.main(["plan", "--config", str(root / "presets" / "cifar100.yaml"), "--table", str(TABLE),
               "--device", "A100-80GB"])
    out = capsys.readouterr().out
    # Table C: teacher fp, student fp, distill (200 epochs), 4 pm (none), 2 qd (200 epochs), 2 dq (20 epochs)
    assert "preset cifar100 on A100-80GB: 11 runs, 1040 epochs," in out
    cost.main(["plan", "--config", str(root / "presets" / "imagenet.yaml"), "--table", str(TABLE),
               "--device", "A100-80GB"])
    out = capsys.readouterr().out
    # Table D: 2 pretrained teachers and the pretrained ResNet-18 (no epochs), two 4-bit QD students, 90 each
    assert "preset imagenet on A100-80GB: 5 runs, 180 epochs," in out
    assert "no epoch time" not in out and "100% of the GPU hours rest on estimated epoch times" in out
    from qd.config import load_config

    runs = cost.config_runs(load_config(root / "presets" / "imagenet.yaml"))
    plan = cost.plan_cost(runs, cost.read_epoch_times(TABLE), "A100-80GB")
    assert plan.wall_hours == pytest.approx(plan.gpu_hours / 8)  # every training run takes 8 GPUs
    # 2xResNet-18 distilled from ResNet-34: 90 epochs of its own time plus a third of the teacher's forward,
    # the table's 1,153,050-image epochs scaled to the 1,281,167 images of val_fraction 0
    rows = cost.read_epoch_times(TABLE)
    own, teacher = (cost.lookup(rows, m, "imagenet", "A100-80GB") for m in ("2xresnet18", "resnet34"))
    qd18 = next(i for i, r in enumerate(runs) if r.model == "2xresnet18")
    scale = 1_281_167 / 1_153_050
    expected = 90 * scale * (own.seconds_per_epoch * (1 + runs[qd18].eval_share / 3) + teacher.seconds_per_epoch / 3)
    assert plan.seconds[qd18] == pytest.approx(expected)


def test_forward_flops_by_hand():
    import torch.nn as nn

    # a 3x3 conv, 3 -> 2 channels, on a 5x5 image: 2 x 3 x 3 outputs, each 27 multiply-adds = 2 FLOPs
    conv = nn.Sequential(nn.Conv2d(3, 2, 3, bias=False), nn.Flatten(), nn.Linear(18, 4, bias=False))
    assert cost.forward_flops(conv, 5) == 2 * (2 * 3 * 3) * 27 + 2 * 18 * 4


def test_named_models_and_a_measured_row():
    import torch

    with torch.device("meta"):
        assert cost.build_named_model("2xresnet18", 1000).fc.in_features == 1024
        assert cost.build_named_model("1.5xresnet18", 10).conv1.out_channels == 96
        assert cost.build_named_model("wrn-10-2", 100).linear.in_features == 128
    with pytest.raises(ValueError, match="cannot build 'vgg16'"):
        cost.build_named_model("vgg16", 10)
    row = cost.measured_row("wrn-10-1", "cifar100", batch=2, steps=1, device="cpu", label="this-cpu")
    assert (row.basis, row.device, row.batch, row.images_per_epoch) == ("measured", "this-cpu", 2, 45_000)
    assert row.seconds_per_epoch > 0 and "median of 1 steps" in row.source


def test_reference_estimate_scales_by_flops():
    same = cost.reference_estimate("resnet50", "imagenet", "X", 256, 1000.0, "ref")
    assert same.seconds_per_epoch == round(1_153_050 / 1000, 1) and same.basis == "estimate"
    assert "1.000x resnet50" in same.source and "not measured" in same.source
    double = cost.reference_estimate("2xresnet18", "imagenet", "X", 256, 1000.0, "ref")
    r18 = cost.reference_estimate("resnet18", "imagenet", "X", 256, 1000.0, "ref")
    # doubling every width multiplies a conv's FLOPs by 4, except the stem's (3 input channels) and fc
    assert 3.5 < double.seconds_per_epoch / r18.seconds_per_epoch < 4.0


def test_importing_the_module_does_not_import_torch():
    code = "import sys, qd.cost; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
