"""Wide ResNets (qd/models/wide_resnet.py; notes 2.3, official-code notes 3) and the parameter counts of
the paper's large vision models (notes 2.3-2.4, Tables C and D).

Counts are checked three ways: the built model, exact numbers worked out by hand from the layer shapes
(below), and the notes' rounded figures.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from qd.models.resnet import resnet
from qd.models.wide_resnet import WideBasic, parse_name, wide_resnet_named, wrn_parameter_count
from qd.policy import QuantPolicy, quantized_names


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name, **kw):
    with torch.device("meta"):  # shapes only: a 146M-parameter model in milliseconds
        return wide_resnet_named(name, **kw)


# By hand, WRN-16-10 (n = 2 blocks per stage, widths 160/320/640) with 100 classes; a BN has 2
# parameters per channel, every conv a bias:
#   stem      conv 3->16 3x3                                              448
#   layer1.0  BN 16, conv 16->160, BN 160, conv 160->160, 1x1 16->160     256,832
#   layer1.1  BN 160, conv 160->160, BN 160, conv 160->160                461,760
#   layer2.0  BN 160, conv 160->320, BN 320, conv 320->320, 1x1 160->320  1,435,520
#   layer2.1  BN 320, conv 320->320, BN 320, conv 320->320                1,845,120
#   layer3.0  BN 320, conv 320->640, BN 640, conv 640->640, 1x1 320->640  5,738,240
#   layer3.1  BN 640, conv 640->640, BN 640, conv 640->640                7,376,640
#   head      BN 640, Linear 640->100                                     65,380
#   total                                                                 17,179,940
WRN16_10_BY_PARTS = {
    "stem": 3 * 16 * 9 + 16,
    "layer1.0": 2 * 16 + (16 * 160 * 9 + 160) + 2 * 160 + (160 * 160 * 9 + 160) + (16 * 160 + 160),
    "layer1.1": 2 * 160 + (160 * 160 * 9 + 160) + 2 * 160 + (160 * 160 * 9 + 160),
    "layer2.0": 2 * 160 + (160 * 320 * 9 + 320) + 2 * 320 + (320 * 320 * 9 + 320) + (160 * 320 + 320),
    "layer2.1": 2 * 320 + (320 * 320 * 9 + 320) + 2 * 320 + (320 * 320 * 9 + 320),
    "layer3.0": 2 * 320 + (320 * 640 * 9 + 640) + 2 * 640 + (640 * 640 * 9 + 640) + (320 * 640 + 640),
    "layer3.1": 2 * 640 + (640 * 640 * 9 + 640) + 2 * 640 + (640 * 640 * 9 + 640),
    "head": 2 * 640 + 640 * 100 + 100,
}
# exact counts with 100 classes (the same per-layer sums, done for each depth and width)
WRN_COUNTS = {
    "wrn-28-10": 36_546_980,
    "wrn-16-10": 17_179_940,
    "wrn-22-8": 17_210_564,
    "wrn-16-6": 6_210_148,
    "wrn-10-4": 1_223_300,
    "wrn-28-20": 145_950_980,
}
# notes 2.3: teacher 36.55M (paper 36.5M), student 17.18M (paper 17.2M), WRN-22-8 17.21M, WRN-16-6 6.21M,
# WRN-10-4 1.22M, WRN-28-20 about 146M
NOTES_MILLIONS = {"wrn-28-10": 36.55, "wrn-16-10": 17.18, "wrn-22-8": 17.21, "wrn-16-6": 6.21, "wrn-10-4": 1.22}
PAPER_MILLIONS = {"wrn-28-10": 36.5, "wrn-16-10": 17.2}


def test_wrn_16_10_by_parts():
    model = _meta("wrn-16-10")
    parts = {"stem": _count(model.conv1), "head": _count(model.bn1) + _count(model.linear)}
    for stage in (1, 2, 3):
        for b, block in enumerate(getattr(model, f"layer{stage}")):
            parts[f"layer{stage}.{b}"] = _count(block)
    assert parts == WRN16_10_BY_PARTS
    assert sum(WRN16_10_BY_PARTS.values()) == 17_179_940


@pytest.mark.parametrize("name", sorted(WRN_COUNTS))
def test_wrn_parameter_counts(name):
    n = _count(_meta(name))
    assert n == WRN_COUNTS[name]
    assert n == wrn_parameter_count(*parse_name(name))
    if name in NOTES_MILLIONS:
        assert round(n / 1e6, 2) == NOTES_MILLIONS[name]
    if name in PAPER_MILLIONS:
        assert round(n / 1e6, 1) == PAPER_MILLIONS[name]
    if name == "wrn-28-20":  # the released script's teacher: "about 146M" in the notes
        assert round(n / 1e6) == 146


def test_ten_classes_change_only_the_classifier():
    # CIFAR-10's WRN-28-10 is quoted as 36.5M too: 90 x 641 fewer parameters
    assert _count(_meta("wrn-28-10", num_classes=10)) == WRN_COUNTS["wrn-28-10"] - 90 * 641


# Table D / notes 2.4 counts with 1000 classes, from qd/models/resnet.py
RESNET_COUNTS = {(50, 1.0): 25_557_032, (18, 2.0): 45_693_032, (34, 2.0): 86_110_824, (34, 1.0): 21_797_672,
                 (18, 1.0): 11_689_512}
RESNET_NOTES_MILLIONS = {(50, 1.0): 25.56, (18, 2.0): 45.69, (34, 2.0): 86.11, (34, 1.0): 21.80, (18, 1.0): 11.69}


@pytest.mark.parametrize("depth,width", sorted(RESNET_COUNTS))
def test_imagenet_model_counts_against_the_notes(depth, width):
    with torch.device("meta"):
        n = _count(resnet(depth, width))
    assert n == RESNET_COUNTS[depth, width]
    assert round(n / 1e6, 2) == RESNET_NOTES_MILLIONS[depth, width]


def test_block_structure_and_biases():
    model = _meta("wrn-16-4")
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    b = model.layer2[0]
    assert (b.conv1.stride, b.conv2.stride) == ((1, 1), (2, 2))  # the stride is on the second conv
    assert isinstance(b.shortcut[0], nn.Conv2d) and b.shortcut[0].stride == (2, 2)
    assert b.shortcut[0].kernel_size == (1, 1)
    assert len(model.layer2[1].shortcut) == 0  # identity where shapes agree
    assert len(model.layer1[0].shortcut) == 1  # 16 -> 64 channels at stride 1 still needs a 1x1 conv
    assert [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in (1, 2, 3)] == [64, 128, 256]
    assert isinstance(b.dropout, nn.Dropout) and b.dropout.p == 0.3


def test_final_bn_momentum_switch():
    faithful = _meta("wrn-10-1")
    assert faithful.bn1.momentum == 0.9
    assert all(m.momentum == 0.1 for n, m in faithful.named_modules() if isinstance(m, nn.BatchNorm2d) and n != "bn1")
    assert _meta("wrn-10-1", final_bn_momentum=0.1).bn1.momentum == 0.1
    with pytest.raises(ValueError, match="final_bn_momentum"):
        wide_resnet_named("wrn-10-1", final_bn_momentum=0)


def test_final_bn_running_mean_weighs_the_batch_by_the_momentum():
    torch.manual_seed(0)
    model = wide_resnet_named("wrn-10-1", num_classes=5).train()
    seen = {}
    model.bn1.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach()))
    model(torch.randn(4, 3, 32, 32))
    batch_mean = seen["x"].mean(dim=(0, 2, 3))
    # running = (1 - momentum) * 0 + momentum * batch mean, with momentum 0.9
    torch.testing.assert_close(model.bn1.running_mean, 0.9 * batch_mean)


def test_official_initialisation():
    torch.manual_seed(0)
    model = wide_resnet_named("wrn-10-8", num_classes=10)
    conv = model.layer3[0].conv2  # 512 -> 512, 3x3
    fan = 512 * 9
    bound = math.sqrt(2) * math.sqrt(6 / (fan + fan))
    w = conv.weight.detach()
    assert w.abs().max() <= bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.01 * bound  # uniform(-b, b) has std b / sqrt 3
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, nn.Conv2d))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    # the classifier keeps nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias not zero
    assert model.linear.weight.abs().max() <= 1 / math.sqrt(512)
    assert model.linear.bias.abs().max() > 0


def test_block_forward_is_pre_activation():
    torch.manual_seed(0)
    block = WideBasic(4, 6, dropout=0.0, stride=2).eval()
    for m in (block.bn1, block.bn2):  # non-trivial statistics, so the BN placement matters
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)
    h = block.conv1(F.relu(block.bn1(x)))
    expected = block.conv2(F.relu(block.bn2(h))) + block.shortcut[0](x)
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 6, 4, 4)


def test_forward_shape_dropout_and_image_size():
    torch.manual_seed(0)
    model = wide_resnet_named("wrn-10-2", num_classes=7)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 7) and torch.isfinite(out).all()
        assert torch.equal(out, model(x))  # no dropout in eval mode
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # dropout between the convs in train mode
    with pytest.raises(ValueError, match="32x32"):
        wide_resnet_named("wrn-10-2", image_size=28)


def test_paper_index_policy_sees_stem_weight_first_and_classifier_bias_last():
    model = _meta("wrn-10-1")
    names = [n for n, _ in model.named_parameters()]
    assert (names[0], names[-1]) == ("conv1.weight", "linear.bias")
    kept = set(names) - set(quantized_names(model, QuantPolicy("paper_index")))
    assert kept == {"conv1.weight", "linear.bias"}
    kept = set(names) - set(quantized_names(model, QuantPolicy("modules")))
    assert kept == {"conv1.weight", "conv1.bias", "linear.weight", "linear.bias"}


@pytest.mark.parametrize("bad", ["wrn-27-10", "wrn-28", "resnet-28-10", "wrn-4-1", "wrn-28-0"])
def test_bad_names(bad):
    with pytest.raises(ValueError, match="wide ResNet"):
        parse_name(bad)


@pytest.mark.parametrize("family,name,classes,size,count", [
    ("wrn", "wrn-28-10", 100, 32, 36_546_980), ("wrn", "wrn-16-10", 100, 32, 17_179_940),
    ("resnet", "resnet50", 1000, 224, 25_557_032), ("resnet", "2xresnet18", 1000, 224, 45_693_032),
    ("resnet", "2xresnet34", 1000, 224, 86_110_824)])
def test_the_model_builder_gives_these_counts(family, name, classes, size, count):
    from qd.models import build_model

    with torch.device("meta"):
        model = build_model({"family": family, "name": name}, in_channels=3, num_classes=classes, image_size=size)
    assert _count(model) == count


def test_positional_depth_and_width():
    from qd.models.wide_resnet import wide_resnet

    with torch.device("meta"):
        model = wide_resnet(16, 10, num_classes=100, dropout=0.0)
    assert _count(model) == 17_179_940 and model.layer1[0].dropout.p == 0.0
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wide_resnet(20, 10)


def test_the_width_factor_narrows_every_layer_and_width_one_is_the_paper_net():
    from qd.models.wide_resnet import WideResNet

    full, half = WideResNet(16, 4, num_classes=10), WideResNet(16, 4, num_classes=10, width=0.5)
    assert (full.conv1.out_channels, full.linear.in_features) == (16, 256)
    assert (half.conv1.out_channels, half.linear.in_features) == (8, 128)
    assert half.layer1[0].conv1.out_channels == 32 and full.layer1[0].conv1.out_channels == 64
    assert WideResNet(16, 1, num_classes=10, width=0.01).conv1.out_channels == 1  # never below one channel
    x = torch.randn(2, 3, 32, 32)
    assert half.eval()(x).shape == (2, 10)
