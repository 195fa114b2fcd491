"""Classification metrics of a model's *quantized* weights: top-1/top-5 accuracy and mean cross-entropy.

Every caller passes the forward pass that uses the weights being reported (the quantized ones for a
quantized method), never the full-precision shadow weights. Translation metrics (perplexity, BLEU)
live with their task adapter, ``qd.tasks.translation``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from qd.data import batches


@torch.no_grad()
def classify(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 512, predictions: bool = False) -> dict:
    """Accuracy (%), top-5 accuracy (%) and mean loss of ``forward`` on ``(x, y)``; with
    ``predictions``, also the top-1 class of every example (in order)."""
    correct = correct5 = 0
    loss = 0.0
    top1 = []
    for xb, yb in batches(x, y, batch_size):
        logits = forward(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        correct += (top[:, 0] == yb).sum().item()
        correct5 += (top == yb[:, None]).any(dim=-1).sum().item()
        if predictions:
            top1.append(top[:, 0].cpu())
    n = max(len(y), 1)
    out = {"accuracy": 100.0 * correct / n, "top5": 100.0 * correct5 / n, "loss": loss / n}
    if predictions:
        out["predictions"] = torch.cat(top1) if top1 else torch.zeros(0, dtype=torch.long)
    return out
