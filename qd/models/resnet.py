"""ResNets with a width multiplier: the paper's ImageNet teachers and students (notes 2.4).

``resnet(depth, width)`` is torchvision's ResNet with every stage's filter count multiplied by
``width`` and floored, as the official code's ``resnet_kfilters``: stage channels ``floor(64k)``,
``floor(128k)``, ``floor(256k)``, ``floor(512k)``; the stem conv is widened too and the classifier
takes ``floor(512k) * expansion`` features. ``width=1`` is torchvision's model exactly (same modules,
names and initialisation), so pretrained teachers load into it.

Parameter counts with 1000 classes: ResNet-18 11,689,512; 1.5xResNet-18 25,902,056 (25.90M);
2xResNet-18 45,690,344 (45.69M); ResNet-34 21,797,672; 2xResNet-34 86,110,728 (86.11M);
ResNet-50 25,557,032.

Exercise it with ``pytest tests/test_resnet.py``.
"""
from __future__ import annotations

import math

import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

# blocks per stage, as torchvision (He et al. 2016, table 1)
DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STEM_CHANNELS = 64


def widened(channels: int, width: float) -> int:
    """``floor(channels * width)``, the official code's rounding (at least one channel)."""
    return max(1, math.floor(channels * width))


class ScaledResNet(ResNet):
    """torchvision's ResNet with all filter counts times ``width`` (stem, four stages, classifier)."""

    def __init__(self, block, layers, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width!r}")
        self.width = width
        super().__init__(block, list(layers), num_classes=num_classes)
        # torchvision hard-codes a 64-channel, 3-input stem and 512 * expansion classifier inputs;
        # they are replaced only when they differ, so width 1 draws the very same initial weights
        stem = widened(STEM_CHANNELS, width)
        if (in_channels, stem) != (3, STEM_CHANNELS):
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = nn.BatchNorm2d(stem)
        features = widened(512, width) * block.expansion
        if features != self.fc.in_features:
            self.fc = nn.Linear(features, num_classes)  # nn.Linear's own initialisation, as torchvision
        self.io_layers = ("conv1", "fc")  # first and last layer, for the quantization policy

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        if not hasattr(self, "layer1"):
            # the first stage reads the widened stem's output; torchvision set inplanes to 64
            self.inplanes = widened(STEM_CHANNELS, self.width)
        return super()._make_layer(block, widened(planes, self.width), blocks, stride, dilate)


def resnet(depth: int, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3) -> ScaledResNet:
    """ResNet-``depth`` (18, 34, 50, 101, 152) with filter counts times ``width`` (2 = '2xResNet')."""
    if depth not in DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth!r}; known: {sorted(DEPTHS)}")
    block, layers = DEPTHS[depth]
    return ScaledResNet(block, layers, width=width, num_classes=num_classes, in_channels=in_channels)
