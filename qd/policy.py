"""Which parameters are quantized (notes 1.5 and ambiguity 5.5).

Three policies, recorded by name in every result row:

* ``all``: every entry of ``model.parameters()`` (biases and norm gamma/beta included), as the official
  code does for the CIFAR-10 conv-net students, CIFAR-100 PM and the translation models.
* ``paper_index``: every parameter except parameter *index* 0 and the last index, the official code's
  ``quantize_first_and_last_layer=False``. It skips a tensor by position, not a layer: on the CIFAR-10
  conv net (whose output layer is registered first) it keeps the output weight and the last norm bias
  in fp32; on a ResNet the first conv weight and the final FC bias.
* ``modules``: chosen by module: the first and last layer (weight and bias) kept in fp32 when
  ``keep_first_last``, with switches for biases, normalisation parameters and embeddings.

BatchNorm running statistics are buffers, never parameters, so no policy quantizes them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

POLICIES = ("all", "paper_index", "modules")
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)


@dataclass(frozen=True)
class QuantPolicy:
    name: str = "all"
    keep_first_last: bool = True
    biases: bool = True
    norm: bool = True
    embeddings: bool = True

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ValueError(f"quant.policy must be one of {POLICIES}, got {self.name!r}")

    def describe(self) -> str:
        if self.name != "modules":
            return self.name
        flags = [f"first_last={'fp32' if self.keep_first_last else 'q'}"]
        flags += [f"{k}={'q' if getattr(self, k) else 'fp32'}" for k in ("biases", "norm", "embeddings")]
        return f"modules({','.join(flags)})"


def io_layers(model: nn.Module) -> tuple[str, str]:
    """Names of the first and last layer in forward order.

    Models that register layers out of forward order say so with an ``io_layers`` attribute;
    otherwise the first and last Conv/Linear/Embedding in registration order are taken.
    """
    if hasattr(model, "io_layers"):
        return tuple(model.io_layers)
    layers = [name for name, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]
    if not layers:
        raise ValueError("the model has no Conv, Linear or Embedding layer")
    return layers[0], layers[-1]


def _module_rule(model: nn.Module, policy: QuantPolicy) -> list[str]:
    first, last = io_layers(model)
    chosen = []
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if policy.keep_first_last and mod_name in (first, last):
                continue
            if isinstance(module, _NORM_TYPES) and not policy.norm:
                continue
            if isinstance(module, nn.Embedding) and not policy.embeddings:
                continue
            if p_name.startswith("bias") and not policy.biases:
                continue
            chosen.append(full)
    return chosen


def quantized_names(model: nn.Module, policy: QuantPolicy) -> list[str]:
    """Names of the parameters that ``policy`` quantizes, in ``named_parameters()`` order."""
    names = [n for n, _ in model.named_parameters()]
    if policy.name == "all":
        return names
    if policy.name == "paper_index":
        return names[1:-1]
    keep = set(_module_rule(model, policy))
    return [n for n in names if n in keep]
