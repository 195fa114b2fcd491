"""One training engine for every method and task: epochs of minibatch steps, evaluation, schedule,
checkpoints.

A method supplies what differs (a :class:`Fit`): the parameters to optimise (student weights, or
DQ's points, optionally in groups with their own learning rate), the loss of one batch, how to
evaluate the weights being reported, and an optional hook after each optimizer step. The task
adapter supplies the batches. The engine owns the rest:

* seeds: the data order (and augmentation) of epoch ``e`` comes from ``seed`` and ``e``; the global
  RNG state (dropout) is checkpointed, so a resumed run repeats an uninterrupted one exactly (CPU);
* schedules, including the official code's 'generic' plateau rule complete (halving, cooldown,
  early stop) and OpenNMT's decay, reading the task's epoch metric in its own direction;
* consecutive *stages* (``train.restarts``): the official CIFAR-10 students were trained twice in a
  row, the second run starting from the first's weights with a fresh optimizer and learning rate;
* an atomic checkpoint (temp file + rename) after every epoch, tagged with the hash of the run's
  spec: a checkpoint of another spec is not resumed but replaced;
* a non-finite loss stops the run with its name, epoch and step;
* with ``train.autocast: bf16`` the training forward (and loss) runs under ``torch.autocast`` in
  bfloat16, while weights, gradients and optimizer state stay fp32 and evaluation runs in fp32;
* progress lines (epoch, step, loss, metrics, ETA) on stderr;
* under ``torchrun`` (``qd.distributed``): each process trains on its share of every global batch,
  the gradients of the fit's parameters are averaged (weighted by each share's size) before every
  step, BatchNorm statistics are taken from rank 0 before evaluation, and only rank 0 writes the
  checkpoint and prints.

Exercise it with ``pytest tests/test_train.py``.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qd import distributed
from qd.errors import NonFiniteLoss
from qd.io import atomic_save


@dataclass
class Fit:
    """What a method hands the engine."""

    params: list  # parameters, or param groups: dicts with "params" and optional "lr" / "weight_decay"
    loss: Callable[[object], torch.Tensor]  # batch -> scalar loss
    evaluate: Callable[[], dict]  # -> {"val_accuracy": .., "test_accuracy": ..} of the reported weights
    modules: list[torch.nn.Module]  # put in train() mode for steps, eval() for evaluation
    after_step: Callable[[], None] | None = None
    state: Callable[[], dict] = field(default=lambda: {})  # extra state to checkpoint
    load_state: Callable[[dict], None] = field(default=lambda s: None)
    # the full-precision shadow weights' metrics, for a schedule that reads them (official QD)
    evaluate_shadow: Callable[[], dict] | None = None
    # set by run_epochs: the seconds of the epochs a checkpoint restored (trained by earlier processes),
    # which the run's time counts beside its own process's
    resumed_seconds: float = 0.0


def flat_params(params: list) -> list[torch.nn.Parameter]:
    """Every parameter of a list of parameters or param groups."""
    out = []
    for p in params:
        out += list(p["params"]) if isinstance(p, dict) else [p]
    return out


def make_optimizer(params: list, cfg: dict) -> torch.optim.Optimizer:
    """The recipe's optimizer; param groups keep their own ``lr`` / ``weight_decay`` if they set them."""
    groups = [dict(p, params=list(p["params"])) for p in params] if params and isinstance(params[0], dict) \
        else [{"params": list(params)}]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["lr"], momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"] and cfg["momentum"] > 0, weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"train.optimizer: unknown optimizer {cfg['optimizer']!r}")


# ---------------------------------------------------------------------------------------- schedules


class GenericPlateau:
    """The official code's 'generic' rule (``LearningRateScheduler``), in the metric's own units.

    After an epoch whose metric does not beat the best so far by more than ``threshold`` (0.1
    accuracy points = the code's 0.1% error band), the count of epochs without improvement grows.
    Once it reaches ``patience`` and no halving happened in the last ``cooldown`` epochs, the learning
    rate is multiplied by ``factor``. Training stops when the count exceeds ``stop_patience`` or the
    learning rate was halved more than ``max_halvings`` times (``None`` = never).
    """

    def __init__(self, optimizer, higher_is_better: bool, patience: int = 10, cooldown: int = 8,
                 stop_patience: int | None = 30, max_halvings: int | None = 11, threshold: float = 0.1,
                 factor: float = 0.5):
        self.optimizer, self.sign = optimizer, 1.0 if higher_is_better else -1.0
        self.patience, self.cooldown, self.threshold, self.factor = patience, cooldown, threshold, factor
        self.stop_patience, self.max_halvings = stop_patience, max_halvings
        self.best = -math.inf
        self.since_improvement = self.wait = self.halvings = 0
        self.should_stop = False

    def step(self, metric: float) -> None:
        value = self.sign * metric
        if value - self.threshold > self.best:
            self.best, self.since_improvement = value, 0
        else:
            self.since_improvement += 1
        self.wait = max(self.wait - 1, 0)
        if self.since_improvement >= self.patience and self.wait == 0:
            self.wait = self.cooldown
            self.halvings += 1
            for g in self.optimizer.param_groups:
                g["lr"] *= self.factor
        self.should_stop = ((self.stop_patience is not None and self.since_improvement > self.stop_patience)
                            or (self.max_halvings is not None and self.halvings > self.max_halvings))

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "since_improvement", "wait", "halvings", "should_stop")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


class OnmtDecay:
    """OpenNMT's decay (its ``Optim.updateLearningRate``): from epoch ``decay_start`` on, or from the
    first epoch whose validation metric is worse than the previous epoch's, multiply the learning
    rate by ``gamma`` after every epoch."""

    def __init__(self, optimizer, higher_is_better: bool, decay_start: int, gamma: float):
        self.optimizer, self.sign = optimizer, 1.0 if higher_is_better else -1.0
        self.decay_start, self.gamma = decay_start, gamma
        self.epoch, self.last, self.decaying, self.should_stop = 0, None, False, False

    def step(self, metric: float) -> None:
        self.epoch += 1
        value = self.sign * metric
        if self.epoch >= self.decay_start or (self.last is not None and value < self.last):
            self.decaying = True
        if self.decaying:
            for g in self.optimizer.param_groups:
                g["lr"] *= self.gamma
        self.last = value

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("epoch", "last", "decaying")}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


def make_schedule(optimizer, cfg: dict, higher_is_better: bool = True):
    """LR schedule stepped once per epoch (``None`` for a constant rate)."""
    name = cfg["schedule"]
    if name == "constant":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["milestones"], cfg["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg["epochs"])
    if name == "plateau":
        return GenericPlateau(optimizer, higher_is_better, cfg["patience"], cfg["cooldown"], cfg["stop_patience"],
                              cfg["max_halvings"])
    if name == "onmt":
        return OnmtDecay(optimizer, higher_is_better, cfg["decay_start"], cfg["gamma"])
    raise ValueError(f"train.schedule: unknown schedule {name!r}")


def _reads_metric(schedule) -> bool:
    return isinstance(schedule, (GenericPlateau, OnmtDecay))


def _set_mode(modules, training: bool) -> None:
    for m in modules:
        m.train(training)


class Progress:
    """Console progress: a line per epoch, and within long epochs a line every ``every`` seconds."""

    def __init__(self, run: str, epochs: int, start_epoch: int, steps: int, every: float = 30.0):
        self.run, self.epochs, self.steps, self.every = run, epochs, steps, every
        self.start_epoch = start_epoch
        self.start = self.last = time.perf_counter()

    def _eta(self, epochs_done: float) -> str:
        """Remaining time, from the pace of the epochs run in this process (at most ``epochs``)."""
        fresh = epochs_done - self.start_epoch
        if fresh <= 0:
            return "?"
        pace = (time.perf_counter() - self.start) / fresh
        return f"{pace * (self.epochs - epochs_done):.0f}s"

    def step(self, epoch: int, step: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every and distributed.is_writer():
            self.last = now
            print(f"[{self.run}] epoch {epoch + 1}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                  f"eta {self._eta(epoch + step / self.steps)}", file=sys.stderr, flush=True)

    def epoch(self, row: dict) -> None:
        self.last = time.perf_counter()
        if not distributed.is_writer():
            return
        skip = {"epoch", "train_loss", "lr", "seconds", "stage"}
        metrics = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in skip and isinstance(v, float))
        print(f"[{self.run}] epoch {row['epoch']}/{self.epochs} loss {row['train_loss']:.4f} {metrics} "
              f"lr {row['lr']:.3g} eta {self._eta(row['epoch'])}", file=sys.stderr, flush=True)


@dataclass
class Selection:
    """Which per-epoch number the schedule reads: ``key`` of the history row, in its direction."""

    key: str  # e.g. "test_accuracy" or "val_ppl"
    higher_is_better: bool
    shadow: bool = False  # read the full-precision shadow weights' metric (official QD)


@dataclass
class _Position:
    stage: int = 0
    stage_epoch: int = 0  # epochs done in the current stage
    epoch: int = 0  # epochs done in all
    history: list = field(default_factory=list)


def run_epochs(fit: Fit, task, cfg: dict, seed: int, run: str, checkpoint: Path | None = None,
               spec_hash: str | None = None, select: Selection | None = None) -> list[dict]:
    """Train with the recipe ``cfg``; returns the per-epoch history (resumes from ``checkpoint``).

    ``task`` provides ``train_batches(batch_size, generator)`` and ``n_train_batches(batch_size)``.
    """
    select = select or Selection(f"{cfg.get('select_on', 'test')}_accuracy", True)
    stages = cfg.get("restarts", 0) + 1
    pos = _Position()
    optimizer, schedule = _fresh(fit, cfg, select)
    if checkpoint is not None and checkpoint.exists():
        pos = _resume(checkpoint, spec_hash, fit, optimizer, schedule, run) or pos
        fit.resumed_seconds = sum(row.get("seconds", 0.0) for row in pos.history)
    steps = task.n_train_batches(cfg["batch_size"])
    progress = Progress(run, cfg["epochs"] * stages, pos.epoch, steps)
    while pos.stage < stages:
        while pos.stage_epoch < cfg["epochs"] and not getattr(schedule, "should_stop", False):
            row = _epoch(fit, task, optimizer, schedule, cfg, seed, pos, run, progress, select, stages)
            pos.history.append(row)
            pos.epoch += 1
            pos.stage_epoch += 1
            if checkpoint is not None:
                _save(checkpoint, spec_hash, pos, fit, optimizer, schedule)
            progress.epoch(row)
        pos.stage += 1
        pos.stage_epoch = 0
        if pos.stage < stages:
            # the next stage restarts from these weights with the initial learning rate
            optimizer, schedule = _fresh(fit, cfg, select)
    return pos.history


def _fresh(fit: Fit, cfg: dict, select: Selection):
    optimizer = make_optimizer(fit.params, cfg)
    return optimizer, make_schedule(optimizer, cfg, select.higher_is_better)


def _epoch(fit, task, optimizer, schedule, cfg, seed, pos, run, progress, select, stages) -> dict:
    t0 = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    loss_sum, steps = _train_epoch(fit, task, optimizer, cfg, seed, pos.epoch, run, progress)
    _set_mode(fit.modules, False)
    for m in fit.modules:
        distributed.broadcast_buffers(m)  # every rank evaluates (and checkpoints) rank 0's statistics
    # outside mixed_precision: the accuracy reported is the fp32 model's, the model the run exports
    # and the paper's numbers are compared with; bf16 only speeds up the steps that train it
    metrics = fit.evaluate()
    if select.shadow and fit.evaluate_shadow is not None:
        metrics.update({f"{k}_fp": v for k, v in fit.evaluate_shadow().items()})
    row = {"epoch": pos.epoch + 1, "train_loss": loss_sum / max(steps, 1), **metrics, "lr": lr,
           "seconds": time.perf_counter() - t0}
    if stages > 1:
        row["stage"] = pos.stage + 1
    if schedule is not None:
        if _reads_metric(schedule):
            key = select.key + ("_fp" if select.shadow and fit.evaluate_shadow is not None else "")
            schedule.step(metrics[key])
        else:
            schedule.step()
    return row


def mixed_precision(cfg: dict, device: torch.device):
    """What a training step's forward pass runs under: ``torch.autocast`` in bfloat16 with
    ``train.autocast: bf16``, else nothing. Only the forward: the weights, their gradients and the
    optimizer state stay fp32 (autocast casts copies of the weights per op), and the backward pass
    runs outside it as torch's recipe asks. bf16 keeps fp32's exponent range, so no loss scaling.
    The quantizers (qd.ste, qd.quant) are not autocast ops: ``Q(w)`` is computed in fp32 from the
    fp32 weights, and only its copy fed to a convolution or linear layer is rounded to bf16. A
    teacher's forward inside the loss runs under it too (its logits in bf16 precision)."""
    mode = cfg.get("autocast", "off")
    if mode == "off":
        return contextlib.nullcontext()
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"train.autocast: unknown mode {mode!r} (off or bf16)")


def _device_of(fit: Fit) -> torch.device:
    params = flat_params(fit.params)
    return params[0].device if params else torch.device("cpu")


def _train_epoch(fit, task, optimizer, cfg, seed, epoch, run, progress) -> tuple[float, int]:
    _set_mode(fit.modules, True)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    params = flat_params(fit.params)
    precision = mixed_precision(cfg, _device_of(fit))
    loss_sum, step = 0.0, 0
    for step, batch in enumerate(task.train_batches(cfg["batch_size"], generator), start=1):
        with precision:
            loss = fit.loss(batch)
        value = loss.item()  # one device sync per step serves the guard, the sum and the progress line
        if not math.isfinite(value):
            raise NonFiniteLoss(f"run {run}: loss became {value} at epoch {epoch + 1}, step {step}; "
                                "stopped (lower train.lr or check the data)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed.active():
            distributed.average_gradients(params, local_count=task.loss_units(batch))
        if cfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
        optimizer.step()
        if fit.after_step is not None:
            fit.after_step()
        loss_sum += value
        progress.step(epoch, step, value)
    return loss_sum, step


def _save(path: Path, spec_hash, pos: _Position, fit: Fit, optimizer, schedule) -> None:
    if not distributed.is_writer():
        distributed.barrier()  # the others resume from rank 0's file: wait until it is written
        return
    _write_checkpoint(path, spec_hash, pos, fit, optimizer, schedule)
    distributed.barrier()


def _write_checkpoint(path: Path, spec_hash, pos: _Position, fit: Fit, optimizer, schedule) -> None:
    atomic_save({
        "spec_hash": spec_hash,
        "epoch": pos.epoch, "stage": pos.stage, "stage_epoch": pos.stage_epoch,
        "history": pos.history,
        "params": [p.detach().clone() for p in flat_params(fit.params)],
        "modules": [m.state_dict() for m in fit.modules],
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else None,
        "rng": torch.get_rng_state(),
        "extra": fit.state(),
    }, path)


def _resume(path: Path, spec_hash, fit: Fit, optimizer, schedule, run: str) -> _Position | None:
    """Restore a checkpoint of this very spec; one of another spec is discarded (returns None)."""
    ckpt = torch.load(path, weights_only=False)
    if ckpt.get("spec_hash") != spec_hash:
        if distributed.is_writer():
            print(f"[{run}] {path} was written for spec {ckpt.get('spec_hash')}, not this run's {spec_hash}: "
                  "starting afresh", file=sys.stderr, flush=True)
        distributed.barrier()  # every rank has read it before rank 0 removes it
        if distributed.is_writer():
            path.unlink()
        return None
    for m, s in zip(fit.modules, ckpt["modules"]):
        m.load_state_dict(s)
    with torch.no_grad():
        for p, saved in zip(flat_params(fit.params), ckpt["params"]):
            p.copy_(saved)
    optimizer.load_state_dict(ckpt["optimizer"])
    if schedule is not None:
        schedule.load_state_dict(ckpt["schedule"])
    torch.set_rng_state(ckpt["rng"])
    fit.load_state(ckpt["extra"])
    if distributed.is_writer():
        print(f"[{run}] resumed from {path} after epoch {ckpt['epoch']}", file=sys.stderr, flush=True)
    return _Position(ckpt["stage"], ckpt["stage_epoch"], ckpt["epoch"], ckpt["history"])
