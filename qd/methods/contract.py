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
RECOMPILE_LIMIT = 32  # graphs of one compiled model class in one run (speed_up)


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
    resumed_seconds: float = 0.0  # training time of earlier processes that a checkpoint restored (fit)

    # ---- models
    def new_model(self) -> nn.Module:
        """A freshly initialised student, seeded by the run's seed (rank 0's on every process), set up
        as the recipe's speed switches ask (:func:`speed_up`)."""
        torch.manual_seed(self.spec["seed"])
        model = self.task.new_model(self.spec["model"])
        distributed.broadcast_module(model)
        return speed_up(model, self.spec.get("train", {}))

    def source_copy(self) -> nn.Module:
        """A copy of the source student, set up as the recipe's speed switches ask (:func:`speed_up`).

        Seeds torch's global generator with the run's seed, as :meth:`new_model` does: a process starts
        with it seeded at random, and what trains the copy may draw from it (fairseq's LSTMs draw their
        dropout masks there), so an unseeded copy trains differently in every process."""
        if self.source is None:
            raise RuntimeError(f"method {self.spec['method']['name']!r} needs a source student but none was given")
        torch.manual_seed(self.spec["seed"])
        return speed_up(copy.deepcopy(self.source), self.spec.get("train", {}))

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
        if teacher is not None:
            speed_up(teacher, self.spec.get("train", {}))  # its forward runs at every step unless cached

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
        history = run_epochs(fit, self.task, t, self.spec["seed"], self.spec["run"], self.run_dir / CHECKPOINT,
                             spec_hash(self.spec), select)
        self.resumed_seconds += fit.resumed_seconds
        return history


def speed_up(model: nn.Module, train: dict) -> nn.Module:
    """``model``, changed in place as the recipe's speed switches ask (each once; values unchanged):

    * ``train.channels_last``: its 4-D weights and every 4-D input in ``torch.channels_last`` memory
      format, the layout oneDNN's and cuDNN's fastest convolutions use. Inputs are converted by a
      forward pre-hook, so every caller (training, evaluation, a teacher's forward in the task adapter)
      gets it without the adapter knowing. The quantizers flatten weights with ``reshape``, which reads
      the logical order whatever the layout: the buckets, and so the codes, do not change
      (tests/test_speed_switches.py). A model without 4-D weights (an LSTM) is left as it is.
    * ``train.compile``: ``model.compile()``, in place. ``qd.ste``'s passes call the model itself
      through ``functional_call``, so the compiled graph runs with the substituted ``Q(w)`` as its
      inputs while the quantizers stay eager (bit-exact with the reference quantizer; inductor's
      ``lerp`` is not, benchmarks/README.md). A ``torch.compile(model)`` wrapper would not do: its
      parameter names gain an ``_orig_mod.`` prefix, which ``functional_call(strict=False)`` would
      skip without a word, training the unquantized weights.

    The run's context applies it to every model it hands a method (``new_model``, ``source_copy``) and
    to the teacher a loss reads, so a method gets the switches without asking. ``train.autocast`` is
    not a change to the model: the engine runs the training forward under it
    (``qd.train.mixed_precision``).
    """
    if train.get("channels_last") and not getattr(model, "_qd_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_inputs_channels_last)
        model._qd_channels_last = True
    if train.get("compile") and not getattr(model, "_qd_compiled", False):
        # every graph of a run recompiles one function (the model class's forward): with and without
        # grad, the epoch's short last batch, the substituted and the shadow weights, a teacher of the
        # same class. Past dynamo's default limit of 8 it would fall back to eager with only a warning.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
        model.compile()
        model._qd_compiled = True
    return model


def _inputs_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4
                 else a for a in args)


def load_codes(model: nn.Module, codes: dict[str, QuantCodes]) -> None:
    """Replace the named parameters' values by their decoded quantized tensors."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, c in codes.items():
            params[name].copy_(decode(c).to(params[name].device))
