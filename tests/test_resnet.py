"""ResNets with a width multiplier (qd/models/resnet.py; paper notes 2.4).

Counts are checked three ways: against torchvision (width 1), against a closed-form count worked out
below from the architecture, and against the paper notes' rounded figures.
"""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from qd.models.resnet import resnet, widened


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(depth, width, **kw):
    with torch.device("meta"):  # shapes only: counts of 86M-parameter models in milliseconds
        return resnet(depth, width, **kw)


def basic_block_resnet_params(blocks, width, classes=1000, in_channels=3) -> int:
    """Closed-form parameter count of a BasicBlock ResNet, stage widths floor(k * (64, 128, 256, 512)).

    stem: 7x7 conv (no bias) + BN (2 per channel); a block: two 3x3 convs + two BNs, plus a 1x1 conv
    + BN shortcut where the channel count or stride changes (the first block of stages 2-4);
    classifier: Linear(c4, classes) with bias.
    """
    stem = math.floor(64 * width)
    total = 49 * in_channels * stem + 2 * stem
    c_in = stem
    for stage, (base, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        c = math.floor(base * width)
        for b in range(n):
            c_prev = c_in if b == 0 else c
            total += 9 * c_prev * c + 2 * c + 9 * c * c + 2 * c
            if b == 0 and (stage > 0 or c_prev != c):
                total += c_prev * c + 2 * c
        c_in = c
    return total + c_in * classes + classes


# exact counts with 1000 classes; the notes give 11.69M, 25.90M, 45.69M, 21.80M and 86.11M
COUNTS = {
    (18, 1.0): 11_689_512,
    (18, 1.5): 25_901_896,
    (18, 2.0): 45_693_032,
    (34, 1.0): 21_797_672,
    (34, 2.0): 86_110_824,
}
NOTES_MILLIONS = {(18, 1.0): 11.69, (18, 1.5): 25.90, (18, 2.0): 45.69, (34, 1.0): 21.80, (34, 2.0): 86.11}
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


@pytest.mark.parametrize("depth,width", sorted(COUNTS))
def test_parameter_counts(depth, width):
    n = _count(_meta(depth, width))
    assert n == COUNTS[depth, width]
    assert n == basic_block_resnet_params(BLOCKS[depth], width)
    assert round(n / 1e6, 2) == NOTES_MILLIONS[depth, width]


@pytest.mark.parametrize("depth,builder", [(18, torchvision.models.resnet18), (34, torchvision.models.resnet34),
                                           (50, torchvision.models.resnet50)])
def test_width_one_is_torchvision_exactly(depth, builder):
    torch.manual_seed(0)
    ours = resnet(depth).state_dict()
    torch.manual_seed(0)
    theirs = builder().state_dict()
    assert list(ours) == list(theirs)  # same names: torchvision checkpoints load as they are
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # same initial values for a seed


def test_width_multiplies_every_stage_and_the_stem():
    m = _meta(18, 1.5)
    assert m.conv1.out_channels == 96 and m.bn1.num_features == 96
    assert [m.layer1[0].conv1.in_channels] + [getattr(m, f"layer{i}")[-1].conv2.out_channels
                                              for i in range(1, 5)] == [96, 96, 192, 384, 768]
    assert m.fc.in_features == 768
    assert m.layer1[0].downsample is None  # the widened stem already has the first stage's width
    assert _meta(50, 2).fc.in_features == 512 * 2 * 4  # bottleneck expansion


def test_floor_rounding_of_widths():
    assert [widened(c, 1.3) for c in (64, 128, 256, 512)] == [83, 166, 332, 665]


def test_forward_shape_of_2x_resnet18_on_a_small_input():
    torch.manual_seed(0)
    model = resnet(18, 2.0, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


def test_other_input_channels_and_bad_arguments():
    m = _meta(18, 1.0, in_channels=1, num_classes=7)
    assert m.conv1.in_channels == 1 and m.fc.out_features == 7
    with pytest.raises(ValueError, match="depth"):
        resnet(20)
    with pytest.raises(ValueError, match="width"):
        resnet(18, 0)
