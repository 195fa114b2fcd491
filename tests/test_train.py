"""The training engine: the official plateau rule against hand traces, OpenNMT's decay, consecutive
stages with a learning-rate reset, and checkpoints that belong to one spec."""
from __future__ import annotations

import math

import pytest
import torch

from qd.train import Fit, GenericPlateau, OnmtDecay, Selection, run_epochs


def _optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _trace(schedule, metrics):
    """The learning rate after each epoch's step, and whether training stopped there."""
    out = []
    for m in metrics:
        schedule.step(m)
        out.append((schedule.optimizer.param_groups[0]["lr"], schedule.should_stop))
    return out


def test_plateau_halves_after_patience_then_waits_the_cooldown():
    opt = _optimizer()
    s = GenericPlateau(opt, higher_is_better=True, patience=3, cooldown=2, stop_patience=None, max_halvings=None)
    # epoch 1 sets the best (50); 50.1 is not better by more than 0.1 points; 60 is
    accs = [50, 50.1, 50.05, 49, 49, 49, 49, 60, 60, 60, 60]
    lrs = [lr for lr, _ in _trace(s, accs)]
    # since-improvement counts 0,1,2,3 -> halve at epoch 4 (wait 2); epochs 5 (wait 1) and 6 (wait 0, count 5
    # >= 3) -> halve again at 6; epoch 7 wait 1; epoch 8 improves (count 0); 9, 10, 11 count 1, 2, 3 -> halve at 11
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.125]


def test_plateau_stops_after_stop_patience_or_too_many_halvings():
    s = GenericPlateau(_optimizer(), True, patience=10, cooldown=8, stop_patience=30, max_halvings=11)
    trace = _trace(s, [70.0] + [69.0] * 31)
    # 30 epochs without improvement are allowed; the 31st stops (the official '> 30')
    assert [stop for _, stop in trace].index(True) == 31
    halves = GenericPlateau(_optimizer(), True, patience=1, cooldown=0, stop_patience=None, max_halvings=2)
    trace = _trace(halves, [70.0, 60, 60, 60])
    assert [lr for lr, _ in trace] == [1, 0.5, 0.25, 0.125]
    assert [stop for _, stop in trace] == [False, False, False, True]  # the third halving is one too many


def _official_generic(errors, patience=10, cooldown=8, stop_patience=30, max_halvings=11, lr=1.0):
    """The official LearningRateScheduler('generic') restated on test *errors* (fractions), as a reference."""
    old, since, wait, halves, out = float("inf"), 0, 0, 0, []
    for e in errors:
        if e + 0.001 < old:
            old, since = e, 0
        else:
            since += 1
        wait = max(wait - 1, 0)
        if since >= patience and wait == 0:
            wait, halves, lr = cooldown, halves + 1, lr / 2
        out.append((lr, since > stop_patience or halves > max_halvings))
    return out


def test_plateau_matches_the_official_rule_on_a_long_noisy_trace():
    gen = torch.Generator().manual_seed(0)
    accs = (80 + 5 * (1 - torch.exp(-torch.arange(150) / 20)) + torch.randn(150, generator=gen) * 0.3).tolist()
    ours = _trace(GenericPlateau(_optimizer(), True), accs)
    reference = _official_generic([1 - a / 100 for a in accs])
    n = next((i + 1 for i, (_, stop) in enumerate(reference) if stop), len(accs))
    assert [(pytest.approx(lr), stop) for lr, stop in ours[:n]] == reference[:n]
    assert any(lr < 1 for lr, _ in ours[:n])  # the trace exercises at least one halving


def test_plateau_on_a_lower_is_better_metric():
    s = GenericPlateau(_optimizer(), higher_is_better=False, patience=2, cooldown=0, stop_patience=None,
                       max_halvings=None)
    assert [lr for lr, _ in _trace(s, [30.0, 29.95, 31.0, 20.0])] == [1, 1, 0.5, 0.5]


def test_onmt_decay_from_its_start_epoch_or_when_validation_gets_worse():
    s = OnmtDecay(_optimizer(), higher_is_better=False, decay_start=4, gamma=0.5)
    assert [lr for lr, _ in _trace(s, [50.0, 40.0, 30.0, 25.0, 24.0])] == [1, 1, 1, 0.5, 0.25]
    worse = OnmtDecay(_optimizer(), higher_is_better=False, decay_start=8, gamma=0.5)
    # perplexity rises at epoch 3: decay from there on, every epoch
    assert [lr for lr, _ in _trace(worse, [50.0, 40.0, 41.0, 30.0])] == [1, 1, 0.5, 0.25]


class _Line:
    """A one-parameter regression task: enough of an adapter for the engine."""

    def __init__(self, n=8):
        self.x = torch.linspace(-1, 1, n)
        self.y = 3 * self.x

    def train_batches(self, batch_size, generator):
        order = torch.randperm(len(self.x), generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]

    def n_train_batches(self, batch_size):
        return math.ceil(len(self.x) / batch_size)


def _fit(w, metrics):
    return Fit(params=[w], loss=lambda b: ((w * b[0] - b[1]) ** 2).mean(), evaluate=lambda: dict(next(metrics)),
               modules=[])


def _recipe(**kw):
    cfg = {"epochs": 3, "batch_size": 4, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False,
           "weight_decay": 0.0, "schedule": "plateau", "patience": 1, "cooldown": 0, "stop_patience": None,
           "max_halvings": None, "select_on": "test", "restarts": 0}
    return dict(cfg, **kw)


def test_restarts_run_stages_with_the_initial_learning_rate_and_fresh_momentum():
    w = torch.nn.Parameter(torch.zeros(()))
    flat = iter([{"test_accuracy": 50.0}] * 6)
    history = run_epochs(_fit(w, flat), _Line(), _recipe(restarts=1), seed=0, run="t",
                         select=Selection("test_accuracy", True))
    assert [r["stage"] for r in history] == [1, 1, 1, 2, 2, 2]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    # a flat metric halves the rate after every epoch but the first of each stage; stage 2 starts at 0.1 again
    assert [r["lr"] for r in history] == pytest.approx([0.1, 0.1, 0.05, 0.1, 0.1, 0.05])


def test_early_stop_ends_a_stage(tmp_path):
    w = torch.nn.Parameter(torch.zeros(()))
    metrics = iter([{"test_accuracy": 50.0}] * 10)
    history = run_epochs(_fit(w, metrics), _Line(), _recipe(epochs=10, stop_patience=2), seed=0, run="t",
                         select=Selection("test_accuracy", True))
    assert len(history) == 4  # counts 0, 1, 2, 3: the fourth epoch exceeds stop_patience 2


def test_a_checkpoint_of_another_spec_is_not_resumed(tmp_path, capsys):
    ckpt = tmp_path / "checkpoint.pt"
    w = torch.nn.Parameter(torch.zeros(()))
    run_epochs(_fit(w, iter([{"test_accuracy": 1.0}] * 3)), _Line(), _recipe(epochs=3, schedule="constant"),
               seed=0, run="t", checkpoint=ckpt, spec_hash="aaa")
    trained = w.detach().clone()
    assert ckpt.exists()
    # the same spec resumes after its 3 epochs: nothing left to do, the weights stay
    w2 = torch.nn.Parameter(torch.zeros(()))
    h = run_epochs(_fit(w2, iter([])), _Line(), _recipe(epochs=3, schedule="constant"), seed=0, run="t",
                   checkpoint=ckpt, spec_hash="aaa")
    assert len(h) == 3 and torch.equal(w2.detach(), trained)
    assert "resumed from" in capsys.readouterr().err
    # another spec (say, a lower learning rate after a failure) starts afresh and says so
    w3 = torch.nn.Parameter(torch.zeros(()))
    h = run_epochs(_fit(w3, iter([{"test_accuracy": 1.0}] * 3)), _Line(), _recipe(epochs=3, schedule="constant",
                   lr=0.01), seed=0, run="t", checkpoint=ckpt, spec_hash="bbb")
    err = capsys.readouterr().err
    assert "was written for spec aaa, not this run's bbb: starting afresh" in err
    assert len(h) == 3 and not torch.equal(w3.detach(), trained)
    assert torch.load(ckpt, weights_only=False)["spec_hash"] == "bbb"


def test_a_resumed_run_counts_the_seconds_of_the_epochs_it_restored(tmp_path):
    """The epochs a checkpoint restores took time in earlier processes: ``fit.resumed_seconds`` is their
    recorded seconds (set here by hand to 100 and 200), which the run's time adds to its own."""
    ckpt = tmp_path / "checkpoint.pt"
    w = torch.nn.Parameter(torch.zeros(()))
    fit = _fit(w, iter([{"test_accuracy": 1.0}] * 2))
    run_epochs(fit, _Line(), _recipe(epochs=2, schedule="constant"), seed=0, run="t", checkpoint=ckpt, spec_hash="a")
    assert fit.resumed_seconds == 0.0  # nothing restored: a fresh run
    state = torch.load(ckpt, weights_only=False)
    state["history"][0]["seconds"], state["history"][1]["seconds"] = 100.0, 200.0
    torch.save(state, ckpt)
    resumed = _fit(torch.nn.Parameter(torch.zeros(())), iter([{"test_accuracy": 1.0}]))
    h = run_epochs(resumed, _Line(), _recipe(epochs=3, schedule="constant"), seed=0, run="t", checkpoint=ckpt,
                   spec_hash="a")
    assert len(h) == 3 and resumed.resumed_seconds == pytest.approx(300.0)


def test_param_groups_keep_their_own_learning_rate():
    a, b = torch.nn.Parameter(torch.ones(())), torch.nn.Parameter(torch.ones(()))
    fit = Fit(params=[{"params": [a]}, {"params": [b], "lr": 0.0}], loss=lambda batch: (a * b * batch[0] - 1).pow(2).mean(),
              evaluate=lambda: {}, modules=[])
    run_epochs(fit, _Line(), _recipe(epochs=1, schedule="constant", momentum=0.0), seed=0, run="t")
    assert a.item() != 1.0 and b.item() == 1.0
