"""The distillation loss (Hinton et al.; notes 1.6 and ambiguity 5.4).

    loss = (1 - weight) * CE(y, softmax(z_s)) + weight * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

``reduction`` sets how the KL term is averaged:

* ``batchmean``: summed over classes, averaged over rows (the textbook Hinton loss);
* ``legacy_mean``: averaged over rows *and classes*, as PyTorch 0.3's ``nn.KLDivLoss()`` did in the
  official code. The soft term is then ``C`` times weaker than with ``batchmean``.

Exercise it with ``pytest tests/test_distill.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("batchmean", "legacy_mean")


def _rows(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    flat = logits.reshape(-1, logits.shape[-1])
    return flat if mask is None else flat[mask.reshape(-1)]


def soft_target_kl(student_logits, teacher_logits, temperature: float, reduction: str, mask=None) -> torch.Tensor:
    """``KL(softmax(z_t/T) || softmax(z_s/T))`` with the requested reduction (no ``T^2`` factor)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    s = _rows(student_logits, mask)
    t = _rows(teacher_logits, mask).detach()
    kl = F.kl_div(F.log_softmax(s / temperature, dim=-1), F.log_softmax(t / temperature, dim=-1),
                  reduction="sum", log_target=True)
    divisor = s.shape[0] if reduction == "batchmean" else s.numel()
    return kl / max(divisor, 1)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    weight: float,
    reduction: str = "batchmean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sum of the hard-label cross-entropy and the temperature-scaled soft-target KL.

    Logits are ``(N, C)`` or ``(..., C)`` with ``mask`` (same leading shape, True = keep) selecting the
    positions that count, e.g. non-padding tokens of a sequence. The teacher's logits are detached.
    """
    s = _rows(student_logits, mask)
    y = targets.reshape(-1) if mask is None else targets.reshape(-1)[mask.reshape(-1)]
    hard = F.cross_entropy(s, y)
    soft = soft_target_kl(student_logits, teacher_logits, temperature, reduction, mask)
    return (1 - weight) * hard + weight * temperature**2 * soft
