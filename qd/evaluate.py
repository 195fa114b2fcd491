"""Classification metrics of a model's *quantized* weights: top-1/top-5 accuracy and mean cross-entropy.

Every caller passes the forward pass that uses the weights being reported (the quantized ones for a
quantized method), never the full-precision shadow weights. Translation metrics (perplexity, BLEU)
live with their task adapter, ``qd.tasks.translation``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from qd.data import batches


@torch.no_grad()
def classify_batches(forward: Callable[[torch.Tensor], torch.Tensor], data: Iterable, predictions: bool = False) -> dict:
    """Accuracy (%), top-5 accuracy (%), mean loss and example count of ``forward`` over ``(x, y)``
    batches; with ``predictions``, also the labels and top-1 classes of every example (in order)."""
    correct = correct5 = n = 0
    loss = 0.0
    top1, labels = [], []
    for xb, yb in data:
        logits = forward(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct += (top[:, 0] == yb).sum().item()
        correct5 += (top == yb[:, None]).any(dim=-1).sum().item()
        n += len(yb)
        if predictions:
            top1.append(top[:, 0].cpu())
            labels.append(yb.cpu())
    d = max(n, 1)
    out = {"accuracy": 100.0 * correct / d, "top5": 100.0 * correct5 / d, "loss": loss / d, "n": n}
    if predictions:
        empty = torch.zeros(0, dtype=torch.long)
        out["predictions"] = torch.cat(top1) if top1 else empty
        out["labels"] = torch.cat(labels) if labels else empty
    return out


def classify(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512, predictions: bool = False) -> dict:
    """:func:`classify_batches` over in-memory tensors."""
    return classify_batches(forward, batches(x, y, batch_size), predictions)
