"""Architecture tables of the paper's models (torch-free: the workflow reads the names)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ConvNetSpec:
    conv_channels: tuple[int, ...]
    kernel: int
    pool_after: tuple[int, ...]
    fc: tuple[int, ...]
    # dropout rate by layer index: conv layers are 0..n_conv-1, FC layers follow
    dropout: dict = field(default_factory=dict)


CONVNET_SPECS = {
    "teacher": ConvNetSpec((76, 76, 126, 126, 148, 148, 148, 148), 3, (1, 3, 7), (1200, 1200),
                           {1: 0.2, 3: 0.3, 7: 0.35, 8: 0.4, 9: 0.4}),
    "student1": ConvNetSpec((75, 50, 50, 25), 5, (1, 3), (500,), {1: 0.2, 3: 0.3, 4: 0.4}),
    "student2": ConvNetSpec((50, 25, 25, 10), 5, (1, 3), (400,), {1: 0.2, 3: 0.3, 4: 0.4}),
    "student3": ConvNetSpec((25, 10, 10, 5), 5, (1, 3), (300,), {1: 0.2, 3: 0.3, 4: 0.4}),
    "deeper": ConvNetSpec((76, 76, 76, 126, 126, 126, 148, 148, 148, 148, 148), 3, (2, 5, 10),
                          (1000, 1000, 1000), {2: 0.2, 5: 0.3, 10: 0.35, 11: 0.4, 12: 0.4}),
}


FAMILY_MODELS = {"convnet": tuple(CONVNET_SPECS)}


@dataclass(frozen=True)
class LstmSpec:
    """An OpenNMT-style seq2seq LSTM: ``layers`` in the encoder and in the decoder, ``hidden`` units,
    ``embed``-dimensional word embeddings (notes 2.5-2.6)."""

    layers: int
    hidden: int
    embed: int = 500


LSTM_SPECS = {
    "teacher": LstmSpec(2, 500),
    "student1": LstmSpec(1, 512),
    "student2": LstmSpec(1, 256),
    "student3": LstmSpec(1, 128),
    # WMT13 (official code): a 1-layer rnn 500 student trained normally, a 1-layer rnn 550 one distilled
    "student500": LstmSpec(1, 500),
    "student550": LstmSpec(1, 550),
}

FAMILY_MODELS["lstm"] = tuple(LSTM_SPECS)

# torchvision ResNets with a width multiplier (notes 2.4): "<k>xresnet<depth>", k = 1 when omitted
RESNET_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "1.5xresnet18", "2xresnet18",
                 "2xresnet34")
# CIFAR wide ResNets (notes 2.2-2.3): "wrn-<depth>-<widen factor>"
WRN_MODELS = ("wrn-28-10", "wrn-16-10", "wrn-28-20", "wrn-16-22", "wrn-22-8", "wrn-16-6", "wrn-10-4")
FAMILY_MODELS["resnet"] = RESNET_MODELS
FAMILY_MODELS["wrn"] = WRN_MODELS


def parse_resnet(name: str) -> tuple[int, float]:
    """``(depth, width)`` of a ResNet model name such as ``2xresnet18``."""
    import re

    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)x)?resnet(\d+)", name)
    if not m:
        raise ValueError(f"bad ResNet name {name!r}: expected e.g. resnet34 or 2xresnet18")
    return int(m[2]), float(m[1] or 1)


def parse_wrn(name: str) -> tuple[int, int]:
    """``(depth, widen_factor)`` of a wide-ResNet name such as ``wrn-28-10``."""
    import re

    m = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if not m:
        raise ValueError(f"bad wide-ResNet name {name!r}: expected e.g. wrn-28-10")
    return int(m[1]), int(m[2])
