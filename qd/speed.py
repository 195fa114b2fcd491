"""The paper's speed claim: inference time follows depth (paper notes 2.4 and claim 2).

The paper timed the ImageNet test set on 4 GPUs: ResNet-34 263 s, ResNet-18 169 s and the twice as
wide 2xResNet-18 also 169 s, a speed-up of 1.56 for 34/18 = 1.89 times fewer layers. This module
times the same three architectures at ImageNet input size, and the CIFAR-10 conv-net teacher,
students and deeper student at CIFAR input size, on whatever device runs it.

Try: ``qd latency --out /tmp/latency_depth.csv --repeats 3``.
"""
from __future__ import annotations

import torch

from qd.latency import depth_comparison
from qd.models.convnet import convnet
from qd.models.resnet import resnet
from qd.models.specs import CONVNET_SPECS



def imagenet_models() -> dict[str, tuple[torch.nn.Module, int, float]]:
    """name -> (model, depth, width) for the paper's ImageNet timing."""
    return {"ResNet-34": (resnet(34), 34, 1.0), "ResNet-18": (resnet(18), 18, 1.0), "2xResNet-18": (resnet(18, 2.0), 18, 2.0)}


def cifar_models() -> dict[str, tuple[torch.nn.Module, int, float]]:
    """The CIFAR-10 conv nets at the paper's sizes; depth counts conv and linear layers."""
    out = {}
    for name in ("deeper", "teacher", "student1", "student2", "student3"):
        spec = CONVNET_SPECS[name]
        out[name] = (convnet(name), len(spec.conv_channels) + len(spec.fc) + 1, 1.0)
    return out


def _group(name: str, models: dict, shape: tuple, device, **timing) -> list[dict]:
    torch.manual_seed(0)
    nets = {k: m.to(device) for k, (m, _, _) in models.items()}
    rows = depth_comparison(nets, torch.randn(*shape, device=device), **timing)
    for r in rows:
        _, r["depth"], r["width"] = models[r["model"]]
        r["group"] = name
    return rows


def depth_latency(batch: int = 1, image_size: int = 224, warmup: int = 2, repeats: int = 5,
                  threads: int | None = None, device: str = "cpu") -> list[dict]:
    """Latency rows of the ImageNet ResNets and the CIFAR-10 conv nets (``relative_time`` to the first,
    deepest model of each group)."""
    timing = {"warmup": warmup, "repeats": repeats, "threads": threads}
    rows = _group("imagenet", imagenet_models(), (batch, 3, image_size, image_size), device, **timing)
    rows += _group("cifar10", cifar_models(), (batch, 3, 32, 32), device, **timing)
    return rows
