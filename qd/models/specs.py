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
