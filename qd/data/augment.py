"""Batch augmentation of the paper's CIFAR recipe: random 32x32 crop of the 4-pixel padded image and
a random horizontal flip, drawn from a generator so that a run (and its resume) is reproducible.

The official loaders (``datasets/CIFAR10.py``, ``datasets/CIFAR100.py``) apply torchvision's
``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip`` to the raw image, *then* ``ToTensor`` and
``Normalize``: the padding is black. So the crop works on the stored uint8 pixels, padding with 0, and
the batch is normalised afterwards (``qd.data.Normalise``).

A crop is three draws per image, the *view*: row offset ``dy`` and column offset ``dx`` into the padded
image (``0 .. 2 * pad``) and a flip. :func:`draw_views` draws them, :func:`apply_views` cuts them out;
the teacher's view cache (``qd.teacher_views``) stores the draws and replays them exactly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 4  # pixels of black around the image before the crop (RandomCrop(32, padding=4))


def draw_views(n: int, generator: torch.Generator, pad: int = PAD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dy, dx, flip)`` of ``n`` images, drawn in that order from ``generator`` (a run's data seed
    fixes them)."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def apply_views(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
                pad: int = PAD) -> torch.Tensor:
    """Image ``i`` of ``x`` (N, C, H, W) as the H x W window at ``(dy[i], dx[i])`` of its ``pad``-pixel
    zero-padded copy, mirrored left-right where ``flip[i]``; one gather for the whole batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # zeros: black in uint8 pixels
    rows = dy.to(x.device, torch.long)[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = dx.to(x.device, torch.long)[:, None] + torch.arange(w, device=x.device)[None, :]  # (n, w)
    cols = torch.where(flip.to(x.device)[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()


def crop_and_flip(x: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """A fresh random view of every image of ``x``."""
    return apply_views(x, *draw_views(len(x), generator, pad), pad=pad)
