"""What a method receives and returns: the contract between the run (``qd/run.py``) and a method.

A method is a function ``method(ctx: RunContext) -> RunResult``. :class:`RunContext` is everything it
may use (the run's spec, its task adapter, device, teacher and source models, and helpers that build
models, losses, evaluators and the training loop from them); :class:`RunResult` is what it gives
back (the final model, its quantized codes, the training history); :func:`load_codes` writes decoded
codes into a model. A method author reads this file and no other; a method imports from here, never
from ``qd.run`` (which imports the methods).

Try: ``python -c "from qd.methods.contract import RunContext; help(RunContext)"``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from qd import distributed
from qd.config import spec_hash
from qd.policy import QuantPolicy, quantized_names
from qd.quant import QuantCodes, decode
from qd.ste import UniformQuantizer
from qd.train import Fit, Selection, run_epochs

CHECKPOINT = "checkpoint.pt"  # the rolling checkpoint in the run folder while a method trains


@dataclass
class RunResult:
    """What a method returns: the final model (quantized weights in place) and their codes."""

    model: nn.Module
    codes: dict[str, QuantCodes] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a method may use. Methods build models and losses from it, never from globals.

    ``task`` is the run's task adapter (data, models, losses, metrics); ``teacher`` and ``source``
    are the finished runs the method reads (in eval mode), when its registry entry asks for them.
    """

    spec: dict
    task: object  # a qd.tasks.base.Task
    device: torch.device
    run_dir: Path
    teacher: nn.Module | None = None
    source: nn.Module | None = None
    teacher_file: Path | None = None  # the teacher's artefact, hashed into the row's teacher_id
    source_file: Path | None = None

    # ---- models
    def new_model(self) -> nn.Module:
        """A freshly initialised student, seeded by the run's seed (rank 0's on every process)."""
        torch.manual_seed(self.spec["seed"])
        model = self.task.new_model(self.spec["model"])
        distributed.broadcast_module(model)
        return model

    def source_copy(self) -> nn.Module:
        if self.source is None:
            raise RuntimeError(f"method {self.spec['method']['name']!r} needs a source student but none was given")
        return copy.deepcopy(self.source)

    def compiled(self, model: nn.Module):
        """``model`` itself, or ``torch.compile(model)`` when the recipe asks (``train.compile``); the
        compiled module shares the model's parameters, so training it trains the model."""
        if self.spec.get("train", {}).get("compile"):
            return torch.compile(model)
        return model

    # ---- quantization
    @property
    def bits(self) -> int:
        return self.spec["method"]["bits"]

    @property
    def bucket_size(self) -> int | None:
        return self.spec["method"]["bucket_size"]

    def policy(self) -> QuantPolicy:
        q = self.spec["quant"]
        return QuantPolicy(q["policy"], q["keep_first_last"], q["biases"], q["norm"], q["embeddings"])

    def quantized_names(self, model: nn.Module) -> list[str]:
        return quantized_names(model, self.policy())

    def uniform_quantizer(self) -> UniformQuantizer:
        stochastic = self.spec["quant"]["rounding"] == "stochastic"
        generator = torch.Generator(device=self.device).manual_seed(self.spec["seed"]) if stochastic else None
        return UniformQuantizer(self.bits, self.bucket_size, stochastic, generator)

    # ---- losses
    def objective(self, forward: Callable, teacher: nn.Module | None = None) -> Callable:
        """The loss of one batch through ``forward``: the task's own loss, or with ``teacher`` the
        distillation loss toward that teacher's outputs (the run's ``distill`` block)."""
        task = self.task

        def task_loss(batch):
            return task.loss(forward(*task.inputs(batch)), batch)

        def distillation(batch):
            target = task.teacher_output(teacher, batch)
            return task.distillation_loss(forward(*task.inputs(batch)), target, batch, self.spec["distill"])

        return task_loss if teacher is None else distillation

    # ---- training and evaluation
    def evaluator(self, forward: Callable) -> Callable[[], dict]:
        """Per-epoch evaluation of ``forward`` (which must use the weights being reported): the task's
        epoch metrics on val and test, as ``<split>_<metric>``."""

        def evaluate() -> dict:
            out = {}
            for split in ("val", "test"):
                out.update({f"{split}_{k}": v for k, v in self.task.epoch_metrics(forward, split).items()})
            return out

        return evaluate

    def fit(self, fit: Fit) -> list[dict]:
        """Train with the run's recipe (``train`` block), checkpointing into the run folder."""
        t = self.spec["train"]
        info = self.task.info
        select = Selection(f"{t.get('select_on', 'test')}_{info.epoch_metric}", info.epoch_higher_is_better,
                           shadow=t.get("schedule_reads") == "full_precision")
        return run_epochs(fit, self.task, t, self.spec["seed"], self.spec["run"], self.run_dir / CHECKPOINT,
                          spec_hash(self.spec), select)


def load_codes(model: nn.Module, codes: dict[str, QuantCodes]) -> None:
    """Replace the named parameters' values by their decoded quantized tensors."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, c in codes.items():
            params[name].copy_(decode(c).to(params[name].device))
