"""Published pretrained weights as a run: torchvision's ``IMAGENET1K_V1`` ResNets (notes 2.4, Table D).

The paper's ImageNet teachers (ResNet-34, ResNet-50) and its ResNet-18 baseline are exactly these
weights. A pretrained model is a workflow product like a trained one: its run evaluates it, writes its
compressed file and result row (with the weights' name and SHA-256), and students read it as their
teacher. Options (``methods.pretrained``): ``weights`` (the ``.pth`` file, or a folder holding it under
torchvision's file name; default torch hub's cache) and ``download``.
"""
from __future__ import annotations

from qd.pretrained import load_pretrained
from qd.run import RunContext, RunResult


def pretrained(ctx: RunContext) -> RunResult:
    opts = ctx.spec["method"]["options"]
    model, record = load_pretrained(ctx.spec["model"]["name"], opts.get("weights"), opts.get("download", False))
    return RunResult(model.to(ctx.device),
                     extra={"weights": record["weights"], "weights_sha256": record["sha256"],
                            "published_top1": record["published_top1"], "published_top5": record["published_top5"]})
