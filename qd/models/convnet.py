"""The paper's CIFAR-10 conv nets (notes 2.1; Urban et al. 2016's plain conv family).

Each conv layer (stride 1, 'same' padding) is followed by ReLU then BatchNorm, with 2x2 max-pooling
and dropout after given layer indices; then fully connected layers (Linear, ReLU, BatchNorm) and a
linear output layer. With ``width=1`` and a 32x32x3 input the parameter counts are the paper's:
teacher 5,346,142; student1 1,000,235; student2 318,415; student3 111,935; deeper 5,825,396.

Official-code quirks kept as switches: ``logits_relu`` (a ReLU on the logits) and the registration
order (the output layer is registered first, which is what the ``paper_index`` quantization policy
sees as parameter 0).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from qd.models.specs import CONVNET_SPECS as SPECS
from qd.models.specs import ConvNetSpec


def scaled(n: int, width: float) -> int:
    """A layer width times the config's width factor (at least 1)."""
    return max(1, round(n * width))


class ConvNet(nn.Module):
    def __init__(self, spec: ConvNetSpec, width: float = 1.0, in_channels: int = 3, num_classes: int = 10,
                 image_size: int = 32, logits_relu: bool = True, dropout: bool = True):
        super().__init__()
        convs = [scaled(c, width) for c in spec.conv_channels]
        fcs = [scaled(f, width) for f in spec.fc]
        # Registered before the layer lists, as in the official code: parameter index 0 is its weight.
        self.out_layer = nn.Linear(fcs[-1] if fcs else convs[-1], num_classes)
        self.logits_relu = logits_relu
        self.pool_after = set(spec.pool_after)
        rates = spec.dropout if dropout else {}
        self.convs = nn.ModuleList()
        self.conv_norms = nn.ModuleList()
        self.conv_drops = nn.ModuleList()
        for i, c in enumerate(convs):
            self.convs.append(nn.Conv2d(convs[i - 1] if i else in_channels, c, spec.kernel, padding="same"))
            self.conv_norms.append(nn.BatchNorm2d(c))
            self.conv_drops.append(nn.Dropout2d(rates[i]) if i in rates else nn.Identity())
        side = image_size // 2 ** len(spec.pool_after)
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(spec.pool_after)} poolings")
        self.fcs = nn.ModuleList()
        self.fc_norms = nn.ModuleList()
        self.fc_drops = nn.ModuleList()
        for j, f in enumerate(fcs):
            self.fcs.append(nn.Linear(fcs[j - 1] if j else convs[-1] * side * side, f))
            self.fc_norms.append(nn.BatchNorm1d(f))
            k = len(convs) + j
            self.fc_drops.append(nn.Dropout(rates[k]) if k in rates else nn.Identity())
        self.io_layers = ("convs.0", "out_layer")
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (conv, norm, drop) in enumerate(zip(self.convs, self.conv_norms, self.conv_drops)):
            x = norm(F.relu(conv(x)))
            if i in self.pool_after:
                x = F.max_pool2d(x, 2)
            x = drop(x)
        x = x.flatten(1)
        for fc, norm, drop in zip(self.fcs, self.fc_norms, self.fc_drops):
            x = drop(norm(F.relu(fc(x))))
        out = self.out_layer(x)
        return F.relu(out) if self.logits_relu else out


def convnet(name: str, **kwargs) -> ConvNet:
    if name not in SPECS:
        raise ValueError(f"unknown conv-net model {name!r}; known: {sorted(SPECS)}")
    return ConvNet(SPECS[name], **kwargs)
