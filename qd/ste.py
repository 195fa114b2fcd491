"""Forward passes through quantized weights (Algorithm 1's inner step, notes 1.5).

The full-precision *shadow* weights stay the module's parameters. Each forward pass substitutes
``Q(w)`` for the chosen parameters through ``torch.func.functional_call``; the straight-through
estimator passes the gradient with respect to ``Q(w)`` unchanged to ``w``, so the optimizer step
lands on the full-precision weights. Nothing swaps ``p.data`` or reloads a state dict.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.func import functional_call

from qd.quant import encode_uniform, quantize_uniform


class StraightThrough(torch.autograd.Function):
    """``Q(w)`` forward, identity backward: cheaper than ``w + (Q(w) - w).detach()`` (no extra passes)."""

    @staticmethod
    def forward(ctx, w, quantize):
        return quantize(w)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def straight_through(w: torch.Tensor, quantize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    return StraightThrough.apply(w, quantize)


class UniformQuantizer:
    """``quantize_uniform`` with fixed bits, bucket size and rounding, as one callable."""

    def __init__(self, bits: int, bucket_size: int | None = 256, stochastic: bool = False,
                 generator: torch.Generator | None = None):
        self.bits, self.bucket_size = bits, bucket_size
        self.stochastic, self.generator = stochastic, generator

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_uniform(w, self.bits, self.bucket_size, self.stochastic, self.generator)

    def state(self) -> dict:
        """The stochastic-rounding generator's state, so a resumed run draws the same numbers."""
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state(self, state: dict) -> None:
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    def encode(self, w: torch.Tensor):
        return encode_uniform(w, self.bits, self.bucket_size, self.stochastic, self.generator)


def quantized_forward(model: torch.nn.Module, quantizers: Mapping[str, Callable], *args, **kwargs):
    """``model(*args)`` with each named parameter ``w`` replaced by its straight-through ``Q(w)``."""
    params = dict(model.named_parameters())
    overrides = {name: straight_through(params[name], q) for name, q in quantizers.items()}
    return functional_call(model, overrides, args, kwargs, strict=False)


def substituted_forward(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], *args, **kwargs):
    """``model(*args)`` with the named parameters replaced by the given tensors (e.g. ``Q(w, p)``)."""
    return functional_call(model, dict(tensors), args, kwargs, strict=False)
