"""Wide residual networks for 32x32 images, as the official code's CIFAR-100 models (notes 2.3).

The official code takes its WRN from meliketoy's ``wide-resnet.pytorch``; this module rebuilds that
architecture (Zagoruyko & Komodakis 2016, pre-activation variant):

* stem: a 3x3 conv to 16 channels (with bias);
* three stages of ``n = (depth - 4) / 6`` basic blocks with ``16k``, ``32k`` and ``64k`` channels, the
  second and third starting with stride 2. A block is BN -> ReLU -> conv3x3 -> dropout -> BN -> ReLU ->
  conv3x3 (the stride sits on the *second* conv), plus a 1x1 conv shortcut (with bias) where the
  channel count or the stride changes, else the identity. Every conv has a bias;
* head: BN -> ReLU -> average pooling over 8x8 -> Linear.

Initialisation as the official ``conv_init``: convs xavier-uniform with gain sqrt(2) and bias 0,
BatchNorm weight 1 and bias 0; the classifier keeps PyTorch's default ``nn.Linear`` initialisation
(the official code does not touch it).

Official-code quirk kept as a switch: the head's BatchNorm is built with ``momentum=0.9``. In
PyTorch's convention that gives 90% weight to the *current* batch in the running statistics (the
inner BNs use the default 0.1); ``final_bn_momentum=0.1`` is the corrected choice.

Parameters are registered in the official order (``conv1``, ``layer1..3``, ``bn1``, ``linear``), so
the ``paper_index`` quantization policy sees the stem conv weight as parameter 0 and the classifier
bias as the last one. Exact counts (``wrn_parameter_count``, checked against the built model):
WRN-28-10 with 100 classes 36,546,980 (the paper's 36.5M teacher), WRN-16-10 17,179,940 (the 17.2M
student), WRN-22-8 17,210,564, WRN-16-6 6,210,148, WRN-10-4 1,223,300, WRN-28-20 145,950,980.

Names are ``wrn-<depth>-<k>``, e.g. ``wrn-28-10`` (``wide_resnet_named``); ``depth`` must be ``6n + 4``.

Exercise it with ``pytest tests/test_wide_resnet.py``.
"""
from __future__ import annotations

import math
import re

import torch.nn as nn
import torch.nn.functional as F

STEM_CHANNELS = 16
STAGE_BASES = (16, 32, 64)  # stage widths before the widening factor k
POOL = 8  # the head's average-pooling window: an 8x8 map for 32x32 inputs after two stride-2 stages
FAITHFUL_FINAL_BN_MOMENTUM = 0.9  # official code (probably a Torch7 habit); PyTorch's default is 0.1
DEFAULT_DROPOUT = 0.3  # cifar100_test.py trains every WRN with dropout 0.3
_NAME = re.compile(r"^wrn-(\d+)-(\d+)$")


def parse_name(name: str) -> tuple[int, int]:
    """``"wrn-28-10"`` -> ``(28, 10)``: depth and widening factor, with the depth checked."""
    m = _NAME.match(name)
    if not m:
        raise ValueError(f"wide ResNet name {name!r} is not of the form 'wrn-<depth>-<k>' (e.g. 'wrn-28-10')")
    depth, k = int(m.group(1)), int(m.group(2))
    blocks_per_stage(depth)
    if k < 1:
        raise ValueError(f"wide ResNet {name!r}: the widening factor must be at least 1")
    return depth, k


def blocks_per_stage(depth: int) -> int:
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"wide ResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
    return (depth - 4) // 6


def wrn_parameter_count(depth: int, k: int, num_classes: int = 100, in_channels: int = 3) -> int:
    """Closed-form parameter count of WRN-``depth``-``k`` (for plans and tables; builds nothing).

    stem 3x3 conv with bias; per block two BNs (2 per channel), two 3x3 convs with bias, a 1x1 conv with
    bias on the first block of each stage whose input width differs; head BN and Linear.
    """
    total = 9 * in_channels * STEM_CHANNELS + STEM_CHANNELS
    c_in = STEM_CHANNELS
    for base in STAGE_BASES:
        c = base * k
        for b in range(blocks_per_stage(depth)):
            first = c_in if b == 0 else c
            total += 2 * first + 9 * first * c + c + 2 * c + 9 * c * c + c
            if b == 0 and (first != c or base != STAGE_BASES[0]):
                total += first * c + c
        c_in = c
    return total + 2 * c_in + c_in * num_classes + num_classes


class WideBasic(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3 (stride on the second conv)."""

    def __init__(self, in_planes: int, planes: int, dropout: float, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


def widened(channels: int, width: float) -> int:
    """``floor(channels * width)``, at least one: the config's width factor (``models.width``) on a layer."""
    return max(1, math.floor(channels * width))


class WideResNet(nn.Module):
    def __init__(self, depth: int, k: int, dropout: float = DEFAULT_DROPOUT, num_classes: int = 100,
                 in_channels: int = 3, final_bn_momentum: float = FAITHFUL_FINAL_BN_MOMENTUM, width: float = 1.0):
        super().__init__()
        if width <= 0:
            raise ValueError(f"wide ResNet width must be positive, got {width!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"wide ResNet dropout must be in [0, 1), got {dropout!r}")
        if not 0 < final_bn_momentum <= 1:
            raise ValueError(f"final_bn_momentum must be in (0, 1], got {final_bn_momentum!r}")
        n = blocks_per_stage(depth)
        self.depth, self.k, self.width = depth, k, width
        self.in_planes = widened(STEM_CHANNELS, width)
        stages = [widened(base * k, width) for base in STAGE_BASES]
        self.conv1 = nn.Conv2d(in_channels, self.in_planes, kernel_size=3, padding=1, bias=True)
        self.layer1 = self._wide_layer(stages[0], n, dropout, stride=1)
        self.layer2 = self._wide_layer(stages[1], n, dropout, stride=2)
        self.layer3 = self._wide_layer(stages[2], n, dropout, stride=2)
        self.bn1 = nn.BatchNorm2d(stages[2], momentum=final_bn_momentum)
        self.linear = nn.Linear(stages[2], num_classes)
        self.io_layers = ("conv1", "linear")  # first and last layer, for the quantization policy
        self.apply(official_init)

    def _wide_layer(self, planes: int, blocks: int, dropout: float, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(WideBasic(self.in_planes, planes, dropout, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.avg_pool2d(F.relu(self.bn1(out)), POOL)
        return self.linear(out.flatten(1))


def official_init(m: nn.Module) -> None:
    """The official ``conv_init``: xavier-uniform (gain sqrt 2) convs with zero bias; BN 1 and 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2))
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def wide_resnet(depth: int, k: int, num_classes: int = 100, in_channels: int = 3, dropout: float = DEFAULT_DROPOUT,
                final_bn_momentum: float = FAITHFUL_FINAL_BN_MOMENTUM, image_size: int = 32,
                width: float = 1.0) -> WideResNet:
    """WRN-``depth``-``k`` for ``image_size`` x ``image_size`` inputs (32 only: the official 8x8 pool), every
    layer's channels times ``width`` (floored, at least one; 1 = the paper's net)."""
    if image_size != 4 * POOL:
        # the head pools a fixed 8x8 window and the classifier reads 64k features: 32x32 inputs only
        raise ValueError(f"wide ResNet WRN-{depth}-{k} takes 32x32 images (the official 8x8 average pool), "
                         f"got image_size {image_size}")
    if k < 1:
        raise ValueError(f"wide ResNet WRN-{depth}-{k}: the widening factor must be at least 1")
    return WideResNet(depth, k, dropout=dropout, num_classes=num_classes, in_channels=in_channels,
                      final_bn_momentum=final_bn_momentum, width=width)


def wide_resnet_named(name: str, **kw) -> WideResNet:
    """:func:`wide_resnet` from a name such as ``"wrn-28-10"``."""
    return wide_resnet(*parse_name(name), **kw)
