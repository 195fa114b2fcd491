"""The CIFAR-10 conv nets (qd/models/convnet.py, qd/models/specs.py; official-code notes 3)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from qd.models import build_model, count_parameters, known_models
from qd.models.convnet import convnet, scaled
from qd.models.specs import CONVNET_SPECS

# the paper's parameter counts for 32x32x3 inputs and 10 classes
PAPER_COUNTS = {
    "teacher": 5_346_142,
    "student1": 1_000_235,
    "student2": 318_415,
    "student3": 111_935,
    "deeper": 5_825_396,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_parameter_counts(name):
    assert count_parameters(convnet(name)) == PAPER_COUNTS[name]


def test_student1_count_by_hand():
    # conv k=5 (weights c_out*c_in*25 + c_out bias), BN 2 per channel, 32 -> 8 after two poolings:
    # 3->75: 5700; 75->50: 93800; 50->50: 62550; 50->25: 31275; conv BN 2*200 = 400;
    # fc 25*8*8=1600 -> 500: 800500; fc BN 1000; out 500 -> 10: 5010.  Total 1,000,235.
    total = 5700 + 93800 + 62550 + 31275 + 400 + 800500 + 1000 + 5010
    assert total == PAPER_COUNTS["student1"]
    m = convnet("student1")
    assert [c.out_channels for c in m.convs] == [75, 50, 50, 25]
    assert m.fcs[0].in_features == 1600


def test_width_factor_scales_channels():
    # 0.5 * (75, 50, 50, 25) = (37.5, 25, 25, 12.5); Python round() is half-to-even: (38, 25, 25, 12)
    # fc: 500 * 0.5 = 250
    m = convnet("student1", width=0.5)
    assert [c.out_channels for c in m.convs] == [38, 25, 25, 12]
    assert [c.in_channels for c in m.convs] == [3, 38, 25, 25]
    assert [f.out_features for f in m.fcs] == [250]
    assert m.fcs[0].in_features == 12 * 8 * 8
    # 3->38: 38*3*25+38 = 2888; 38->25: 25*38*25+25 = 23775; 25->25: 15650; 25->12: 7512;
    # conv BN 2*(38+25+25+12) = 200; fc 768->250: 192250; fc BN 500; out 250->10: 2510
    assert count_parameters(m) == 2888 + 23775 + 15650 + 7512 + 200 + 192250 + 500 + 2510


def test_scaled_minimum_one():
    assert scaled(75, 0.5) == 38 and scaled(25, 0.5) == 12 and scaled(10, 0.01) == 1


@pytest.mark.parametrize("name", ["student1", "student3", "teacher"])
def test_output_shape_small_images_one_channel(name):
    torch.manual_seed(0)
    m = convnet(name, in_channels=1, image_size=8, num_classes=7).eval()
    x = torch.randn(4, 1, 8, 8)
    assert m(x).shape == (4, 7)
    assert m.convs[0].in_channels == 1


def test_image_too_small_rejected():
    with pytest.raises(ValueError, match="too small"):
        convnet("teacher", image_size=4)  # three poolings: 4 // 8 = 0


def test_unknown_model_rejected():
    with pytest.raises(ValueError, match="unknown conv-net"):
        convnet("student9")


def test_logits_relu():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    torch.manual_seed(1)
    relu = convnet("student3", image_size=8, logits_relu=True).eval()
    torch.manual_seed(1)
    plain = convnet("student3", image_size=8, logits_relu=False).eval()
    y_plain = plain(x)
    y_relu = relu(x)
    assert (y_plain < 0).any()  # the same weights give negative raw logits ...
    assert (y_relu >= 0).all()  # ... which the ReLU clips
    torch.testing.assert_close(y_relu, torch.relu(y_plain))


def test_parameter_index_zero_is_output_weight():
    m = convnet("student2")
    names = [n for n, _ in m.named_parameters()]
    assert names[0] == "out_layer.weight" and names[1] == "out_layer.bias"
    assert names[-1] == "fc_norms.0.bias"
    d = convnet("deeper")
    assert [n for n, _ in d.named_parameters()][-1] == "fc_norms.2.bias"


def test_dropout_switch_and_rates():
    m = convnet("student1")
    rates = [mod.p for mod in m.modules() if isinstance(mod, (nn.Dropout, nn.Dropout2d))]
    assert rates == [0.2, 0.3, 0.4]  # spec {1: 0.2, 3: 0.3, 4 (the fc): 0.4}
    off = convnet("student1", dropout=False)
    assert not any(isinstance(mod, (nn.Dropout, nn.Dropout2d)) for mod in off.modules())
    assert count_parameters(off) == count_parameters(m)


def test_init_xavier_and_zero_bias():
    torch.manual_seed(0)
    m = convnet("student3")
    for layer in list(m.convs) + list(m.fcs) + [m.out_layer]:
        assert torch.all(layer.bias == 0)
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel() if layer.weight.dim() > 2 else layer.weight.shape[0]
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound


def test_build_model_from_spec():
    spec = {"family": "convnet", "name": "student3", "width": 1.0, "logits_relu": False, "dropout": False}
    m = build_model(spec, in_channels=1, num_classes=10, image_size=8)
    assert m.convs[0].in_channels == 1 and not m.logits_relu
    with pytest.raises(ValueError, match="family"):
        build_model({"family": "vgg", "name": "x"}, 3, 10, 32)
    with pytest.raises(ValueError, match="bad ResNet name 'x'"):
        build_model({"family": "resnet", "name": "x"}, 3, 10, 32)
    wide = build_model({"family": "resnet", "name": "2xresnet18", "width": 0.5}, 3, 10, 32)
    assert wide.fc.in_features == 512  # 2 x 0.5 = the plain ResNet-18's widths
    assert known_models("convnet") == tuple(CONVNET_SPECS)
    assert known_models("nope") == ()
