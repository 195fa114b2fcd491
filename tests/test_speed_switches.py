"""The recipe's speed switches (``train.channels_last``, ``train.compile``, ``train.autocast``): the
quantizers see the same logical weights whatever the memory format, every method trains through the
switched model, and bf16 autocast touches the training forward only."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from qd.config import RunId, load_config, run_spec
from qd.methods.contract import speed_up
from qd.models.convnet import convnet
from qd.quant import encode_nonuniform, encode_uniform, quantile_points, quantize_nonuniform, quantize_uniform
from qd.run import execute
from qd.ste import UniformQuantizer, quantized_forward, substituted_forward
from qd.train import Fit, mixed_precision, run_epochs

from conftest import ROOT
from test_reliability import prepared  # noqa: F401 - the tiny runs' fixture

CL = torch.channels_last


def _weight(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# teacher conv 2 (76 -> 76, 3x3: 51,984 elements, the blocked quantizer) and student3's conv 2 (25 -> 10, 5x5)
@pytest.mark.parametrize("shape", [(76, 76, 3, 3), (10, 25, 5, 5)])
@pytest.mark.parametrize("bucket", [256, None, 100])
def test_a_channels_last_weight_has_the_same_codes(shape, bucket):
    w = _weight(shape)
    w_cl = w.contiguous(memory_format=CL)
    assert w_cl.stride() != w.stride() and torch.equal(w_cl, w)  # same values, another layout
    a, b = encode_uniform(w, 2, bucket), encode_uniform(w_cl, 2, bucket)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.lo, b.lo) and torch.equal(a.hi, b.hi)
    # buckets run over the logical (row-major) order, not the memory order of the channels_last copy
    first = w.reshape(-1)[: bucket or w.numel()]
    assert (b.lo[0].item(), b.hi[0].item()) == (first.min().item(), first.max().item())
    assert torch.equal(quantize_uniform(w_cl, 4, bucket), quantize_uniform(w, 4, bucket))
    points = quantile_points(w, 4, bucket)
    assert torch.equal(quantize_nonuniform(w_cl, points, bucket), quantize_nonuniform(w, points, bucket))
    n, c = encode_nonuniform(w, points, bucket), encode_nonuniform(w_cl, points, bucket)
    assert torch.equal(n.indices, c.indices) and torch.equal(n.lo, c.lo)


def test_channels_last_converts_the_weights_and_inputs_once_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = convnet("student3", width=0.5, dropout=False).eval()
    plain = copy.deepcopy(model)
    speed_up(model, {"channels_last": True})
    speed_up(model, {"channels_last": True})  # a second call (a shared teacher) adds nothing
    assert model.convs[0].weight.is_contiguous(memory_format=CL)
    assert model.fcs[0].weight.is_contiguous()  # a 2-D weight has no channels_last form
    assert len(model._forward_pre_hooks) == 1
    seen = []
    model.convs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=CL)))
    x = _weight((8, 3, 32, 32), seed=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), rtol=1e-5, atol=1e-5)
    assert seen == [True]  # the adapter's contiguous batch reached the first conv in channels_last


def test_quantized_forward_through_a_channels_last_model_trains_the_same_shadow_weights():
    torch.manual_seed(0)
    # eval mode: BatchNorm on its running statistics. In train mode torch's channels_last CPU
    # BatchNorm computes the batch statistics less exactly (measured 2e-5 relative against float64,
    # the contiguous kernel 4e-7), which 16-image batch statistics amplify in the gradients; that is
    # float error of torch's kernel, not a change of layout, and is not what this test is about.
    model = convnet("student3", dropout=False).eval()
    plain = copy.deepcopy(model)
    speed_up(model, {"channels_last": True})
    q = UniformQuantizer(2, 256)
    names = [n for n, _ in model.named_parameters()]
    x, y = _weight((16, 3, 32, 32), seed=2), torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(3))
    out = quantized_forward(model, {n: q for n in names}, x)
    ref = quantized_forward(plain, {n: q for n in names}, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(ref, y).backward()
    got, want = dict(model.named_parameters()), dict(plain.named_parameters())
    for n in names:
        assert torch.equal(q.encode(got[n]).indices, q.encode(want[n]).indices), n
        # the straight-through gradient lands on the channels_last shadow weight element for element
        scale = want[n].grad.abs().max().item()
        torch.testing.assert_close(got[n].grad, want[n].grad, rtol=0, atol=1e-4 * scale, msg=n)


def test_autocast_off_is_nothing_and_bf16_runs_matmuls_in_bf16():
    with mixed_precision({"autocast": "off"}, torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    layer = torch.nn.Linear(4, 3)
    with mixed_precision({"autocast": "bf16"}, torch.device("cpu")):
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="train.autocast: unknown mode 'fp16'"):
        mixed_precision({"autocast": "fp16"}, torch.device("cpu"))


class _Batches:
    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch

    def train_batches(self, batch_size, generator):
        for i in range(0, len(self.y), batch_size):
            yield self.x[i:i + batch_size], self.y[i:i + batch_size]

    def n_train_batches(self, batch_size):
        return -(-len(self.y) // batch_size)


def test_the_engine_autocasts_the_training_forward_only():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    data = _Batches(_weight((32, 6), seed=4), torch.arange(32) % 3, 8)
    dtypes = {"train": set(), "evaluate": set()}

    def loss(batch):
        out = model(batch[0])
        dtypes["train"].add(out.dtype)
        return F.cross_entropy(out, batch[1])

    def evaluate():
        with torch.no_grad():
            dtypes["evaluate"].add(model(data.x).dtype)
        return {"test_accuracy": 0.0}

    cfg = {"epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
           "weight_decay": 0.0, "schedule": "constant", "autocast": "bf16"}
    history = run_epochs(Fit(list(model.parameters()), loss, evaluate, [model]), data, cfg, 0, "t")
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    assert dtypes == {"train": {torch.bfloat16}, "evaluate": {torch.float32}}
    assert model.weight.dtype == torch.float32 and model.weight.grad.dtype == torch.float32


# ------------------------------------------------------------------ whole runs through qd.run.execute

@pytest.fixture(scope="module")
def runs(prepared):
    """test_reliability's tiny config, digits split and teacher, and an fp student 3 (DQ's source)."""
    cfg, root, data = prepared
    source = RunId("digits", "student3", "fp", "fp32", 0)
    execute(run_spec(cfg, source), root / source.path, data)
    return cfg, root, data


def _run(runs, method, variant, out, **switches):
    cfg, root, data = runs
    spec = run_spec(cfg, RunId("digits", "student3", method, variant, 0))
    spec["train"].update(epochs=1, **switches)
    teacher = root / "digits/teacher/fp/fp32/seed0" if "teacher" in spec else None
    source = root / "digits/student3/fp/fp32/seed0" if "source" in spec else None
    row = execute(spec, root / out, data, teacher, source)
    return row, json.loads((root / out / "spec.json").read_text())


@pytest.mark.parametrize("method,variant", [("qd", "b2-d256"), ("dq", "b2-d256"), ("distill", "fp32")])
def test_channels_last_and_bf16_runs_give_a_quantized_model_near_the_plain_run(runs, method, variant):
    plain, _ = _run(runs, method, variant, f"plain-{method}")
    fast, spec = _run(runs, method, variant, f"fast-{method}", channels_last=True, autocast="bf16")
    assert spec["train"]["channels_last"] is True and spec["train"]["autocast"] == "bf16"
    assert fast["config_hash"] != plain["config_hash"]  # another recipe, another run
    # one epoch of bf16 steps moves the weights otherwise; the tiny nets' one-epoch accuracies (21 to 31 %
    # on 10 classes) are what they are near, not equal to
    assert abs(fast["accuracy"] - plain["accuracy"]) < 10, (fast["accuracy"], plain["accuracy"])
    assert fast["accuracy"] > 15
    assert (fast["bits"], fast["quantized_params"]) == (plain["bits"], plain["quantized_params"])


@pytest.mark.slow
def test_a_compiled_student_computes_the_eager_quantized_steps():
    """``train.compile`` with the STE (QD) and with DQ's learned points: the compiled graph runs with
    the substituted tensors as inputs and gives the eager loss and gradients (no dropout here: the
    compiled random stream is not eager's)."""
    torch.manual_seed(0)
    model = convnet("student3", dropout=False).train()
    plain = copy.deepcopy(model)
    speed_up(model, {"compile": True})
    names = [n for n, _ in model.named_parameters()]
    x, y = _weight((16, 3, 32, 32), seed=5), torch.arange(16) % 10
    q = UniformQuantizer(2, 256)
    losses = [F.cross_entropy(quantized_forward(m, {n: q for n in names}, x), y) for m in (model, plain)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    got, want = dict(model.named_parameters()), dict(plain.named_parameters())
    for n in names:
        # inductor fuses BatchNorm's reductions in its own order: measured up to 2e-4 of the largest
        # gradient away from float64 (eager: 6e-6), so 1e-3 tells float order from a wrong graph
        scale = want[n].grad.abs().max().item()
        torch.testing.assert_close(got[n].grad, want[n].grad, rtol=0, atol=1e-3 * scale, msg=n)
    # DQ: the weights fixed, the gradient reaches the points through quantize_nonuniform
    w = {n: p.detach().clone() for n, p in plain.named_parameters()}
    grads = []
    for m in (model, plain):
        points = torch.nn.Parameter(quantile_points(w["convs.1.weight"], 4, 256))
        quantized = {"convs.1.weight": quantize_nonuniform(w["convs.1.weight"], points, 256)}
        F.cross_entropy(substituted_forward(m, quantized, x), y).backward()
        grads.append(points.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4 * grads[1].abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("method,variant", [("qd", "b2-d256"), ("dq", "b2-d256")])
def test_compiled_quantized_runs_train_on_the_compiled_graph(runs, method, variant, caplog):
    from torch._dynamo.utils import counters

    counters.clear()
    row, spec = _run(runs, method, variant, f"compiled-{method}", compile=True, channels_last=True)
    assert spec["train"]["compile"] is True
    assert counters["stats"]["unique_graphs"] >= 2  # training and evaluation graphs at least
    assert "recompile_limit" not in caplog.text  # no silent fall back to eager
    assert row["accuracy"] > 15 and row["bits"] == 2


# ------------------------------------------------------------------ benchmarks/gpu_cifar10.py on a CPU


def _gpu_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_cifar10", ROOT / "benchmarks" / "gpu_cifar10.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_rows_replace_their_own_rows_and_keep_the_rest(tmp_path):
    from qd.cost import EpochTime, config_runs, plan_cost, read_epoch_times

    table = tmp_path / "epoch_times.csv"
    table.write_text((ROOT / "config" / "epoch_times.csv").read_text())
    before = read_epoch_times(table)
    script = _gpu_script()
    row = lambda model, s: EpochTime(model, "cifar10", "H100-80GB", 25, 50_000, s, "measured", "test, a, b")  # noqa: E731
    script.replace_rows(table, [row("teacher", 40.0), row("student3", 12.5)])
    script.replace_rows(table, [row("teacher", 30.0)])  # a second measurement replaces the first
    after = read_epoch_times(table)
    assert after[:len(before)] == before  # the other rows, in their order
    assert [(r.model, r.seconds_per_epoch) for r in after[len(before):]] == [("student3", 12.5), ("teacher", 30.0)]
    assert table.read_text().startswith("# Seconds per training epoch")  # the comments stay
    # qd plan counts the preset's teacher and student 3 from them, and no other model
    plan = plan_cost(config_runs(load_config(ROOT / "config" / "presets" / "cifar10.yaml")), after, "H100-80GB")
    assert sorted({m for m, _ in plan.missing}) == ["deeper", "student1", "student2"]
    trained = {plan.runs[i].model for i, seconds in plan.seconds.items() if seconds > 0}  # PM trains nothing
    assert trained == {"teacher", "student3"}


@pytest.mark.slow
def test_the_gpu_script_runs_on_a_cpu_and_leaves_the_table_alone(tmp_path, capsys):
    table = ROOT / "config" / "epoch_times.csv"
    before = table.read_bytes()
    assert _gpu_script().main(["--device", "cpu", "--quick", "--epochs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert table.read_bytes() == before
    assert "no table written" in out
    for run in ("teacher-fp", "student3-fp", "student3-qd", "student3-dq"):
        row = json.loads((tmp_path / run / "metrics.json").read_text())
        assert row["epochs"] == 1 and row["n_test"] == 200, run
    assert json.loads((tmp_path / "student3-qd" / "metrics.json").read_text())["bits"] == 4
    assert "row: teacher, cifar10, cpu-" in out and "row: student3, cifar10, cpu-" in out
