"""One training engine for every method: epochs of minibatch steps, evaluation, schedule, checkpoints.

A method supplies what differs: the parameters to optimise (student weights, or DQ's points), the
loss of one minibatch, how to evaluate the current (quantized) model, and an optional hook after
each optimizer step. The engine owns the rest:

* seeds: the data order of epoch ``e`` comes from ``seed`` and ``e``; the global RNG state (dropout)
  is checkpointed, so a resumed run repeats an uninterrupted one exactly (CPU);
* an atomic checkpoint (temp file + rename) after every epoch, resumed from when present;
* a non-finite loss stops the run with its name, epoch and step;
* progress lines (epoch, step, loss, accuracy, ETA) on stderr.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qd.data import Splits, batches
from qd.data.augment import crop_and_flip
from qd.errors import NonFiniteLoss
from qd.io import atomic_save


@dataclass
class Fit:
    """What a method hands the engine."""

    params: list[torch.nn.Parameter]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> scalar loss
    evaluate: Callable[[], dict]  # -> {"val_accuracy": .., "test_accuracy": ..}
    modules: list[torch.nn.Module]  # put in train() mode for steps, eval() for evaluation
    after_step: Callable[[], None] | None = None
    state: Callable[[], dict] = field(default=lambda: {})  # extra state to checkpoint
    load_state: Callable[[dict], None] = field(default=lambda s: None)


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               nesterov=cfg["nesterov"] and cfg["momentum"] > 0, weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"train.optimizer: unknown optimizer {cfg['optimizer']!r}")


def make_schedule(optimizer, cfg: dict):
    """LR schedule stepped once per epoch. ``plateau`` is the official 'generic' rule: halve the LR
    when the selection accuracy has not improved by 0.1 points for ``patience`` epochs."""
    name = cfg["schedule"]
    if name == "constant":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["milestones"], cfg["gamma"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg["epochs"])
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=cfg["patience"],
                                                          threshold=0.1, threshold_mode="abs")
    raise ValueError(f"train.schedule: unknown schedule {name!r}")


def _step_schedule(schedule, metrics: dict, select_on: str) -> None:
    if schedule is None:
        return
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        schedule.step(metrics[f"{select_on}_accuracy"])
    else:
        schedule.step()


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
        """Remaining time, from the pace of the epochs run in this process."""
        fresh = epochs_done - self.start_epoch
        if fresh <= 0:
            return "?"
        pace = (time.perf_counter() - self.start) / fresh
        return f"{pace * (self.epochs - epochs_done):.0f}s"

    def step(self, epoch: int, step: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            print(f"[{self.run}] epoch {epoch + 1}/{self.epochs} step {step}/{self.steps} loss {loss:.4f} "
                  f"eta {self._eta(epoch + step / self.steps)}", file=sys.stderr, flush=True)

    def epoch(self, row: dict) -> None:
        self.last = time.perf_counter()
        accs = " ".join(f"{k.removesuffix('_accuracy')} {v:.2f}" for k, v in row.items() if k.endswith("_accuracy"))
        print(f"[{self.run}] epoch {row['epoch']}/{self.epochs} loss {row['train_loss']:.4f} {accs} "
              f"lr {row['lr']:.3g} eta {self._eta(row['epoch'])}", file=sys.stderr, flush=True)


def run_epochs(fit: Fit, splits: Splits, cfg: dict, seed: int, run: str, checkpoint: Path | None) -> list[dict]:
    """Train for ``cfg['epochs']`` epochs; returns the per-epoch history (resumes from ``checkpoint``)."""
    optimizer = make_optimizer(fit.params, cfg)
    schedule = make_schedule(optimizer, cfg)
    history: list[dict] = []
    start_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        start_epoch, history = _resume(checkpoint, fit, optimizer, schedule)
        print(f"[{run}] resumed from {checkpoint} after epoch {start_epoch}", file=sys.stderr, flush=True)
    x, y = splits.train
    steps = math.ceil(len(y) / cfg["batch_size"])
    progress = Progress(run, cfg["epochs"], start_epoch, steps)
    for epoch in range(start_epoch, cfg["epochs"]):
        t0 = time.perf_counter()
        loss_sum = _train_epoch(fit, optimizer, x, y, cfg, seed, epoch, run, progress)
        _set_mode(fit.modules, False)
        metrics = fit.evaluate()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps, **metrics,
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        _step_schedule(schedule, metrics, cfg["select_on"])
        history.append(row)
        if checkpoint is not None:
            _save(checkpoint, epoch + 1, history, fit, optimizer, schedule)
        progress.epoch(row)
    return history


def _train_epoch(fit, optimizer, x, y, cfg, seed, epoch, run, progress) -> float:
    _set_mode(fit.modules, True)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    loss_sum = 0.0
    for step, (xb, yb) in enumerate(batches(x, y, cfg["batch_size"], generator), start=1):
        if cfg["augment"]:
            xb = crop_and_flip(xb, generator)
        loss = fit.loss(xb, yb)
        value = loss.item()  # one device sync per step serves the guard, the sum and the progress line
        if not math.isfinite(value):
            raise NonFiniteLoss(f"run {run}: loss became {value} at epoch {epoch + 1}, step {step}; "
                                "stopped (lower train.lr or check the data)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(fit.params, cfg["grad_clip"])
        optimizer.step()
        if fit.after_step is not None:
            fit.after_step()
        loss_sum += value
        progress.step(epoch, step, value)
    return loss_sum


def _save(path: Path, epoch: int, history, fit: Fit, optimizer, schedule) -> None:
    atomic_save({
        "epoch": epoch,
        "history": history,
        "params": [p.detach().clone() for p in fit.params],
        "modules": [m.state_dict() for m in fit.modules],
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else None,
        "rng": torch.get_rng_state(),
        "extra": fit.state(),
    }, path)


def _resume(path: Path, fit: Fit, optimizer, schedule) -> tuple[int, list[dict]]:
    ckpt = torch.load(path, weights_only=False)
    for m, s in zip(fit.modules, ckpt["modules"]):
        m.load_state_dict(s)
    with torch.no_grad():
        for p, saved in zip(fit.params, ckpt["params"]):
            p.copy_(saved)
    optimizer.load_state_dict(ckpt["optimizer"])
    if schedule is not None:
        schedule.load_state_dict(ckpt["schedule"])
    torch.set_rng_state(ckpt["rng"])
    fit.load_state(ckpt["extra"])
    return ckpt["epoch"], ckpt["history"]
