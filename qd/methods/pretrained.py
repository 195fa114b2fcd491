"""Published pretrained weights as a run: torchvision's ``IMAGENET1K_V1`` ResNets (notes 2.4, Table D).

The paper's ImageNet teachers (ResNet-34, ResNet-50) and its ResNet-18 baseline are exactly these
weights. A pretrained model is a workflow product like a trained one: its run evaluates it, writes its
compressed file and result row (with the weights' name and SHA-256), and students read it as their
teacher. Options (``methods.pretrained``): ``weights`` (the ``.pth`` file, or a folder holding it under
torchvision's file name; default torch hub's cache) and ``download``. A preset may run it under
another method name through ``entry`` (the ImageNet preset's ``fp``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qd.methods.contract import RunContext, RunResult

# What the published weights are as a run, whatever the method is named: the ImageNet preset names it
# ``fp`` (a normally trained full-precision model: the paper's Table D rows, claim 1's teacher), with
# ``entry: qd.methods.pretrained:pretrained`` (docs/choices.md, "ImageNet FP rows are torchvision's V1").
PROPERTIES = {"quantized": False, "needs_teacher": False, "trains": False, "distills": False}

# torch and the run's contract are imported inside the functions: the registry imports this module
# while the workflow builds its DAG (qd.methods.registry.plugin), which must stay torch-free


def pretrained(ctx: RunContext) -> RunResult:
    from qd.methods.contract import RunResult
    from qd.pretrained import load_pretrained

    opts = ctx.spec["method"]["options"]
    model, record = load_pretrained(ctx.spec["model"]["name"], opts.get("weights"), opts.get("download", False))
    return RunResult(model.to(ctx.device),
                     extra={"weights": record["weights"], "weights_sha256": record["sha256"],
                            "published_top1": record["published_top1"], "published_top5": record["published_top5"]})
