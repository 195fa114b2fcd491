"""Model builders by family. ``build_model(spec, **meta)`` takes the ``model`` block of a run spec and
the data's shape (classification; translation models are built by their task adapter)."""
from __future__ import annotations

from qd.models.specs import FAMILY_MODELS


def known_models(family: str) -> tuple[str, ...]:
    return FAMILY_MODELS.get(family, ())


def build_model(spec: dict, in_channels: int, num_classes: int, image_size: int):
    """A freshly initialised classifier from a run spec's ``model`` block and the dataset's shape."""
    family = spec.get("family", "convnet")
    if family == "convnet":
        from qd.models.convnet import convnet

        return convnet(spec["name"], width=spec.get("width", 1.0), in_channels=in_channels,
                       num_classes=num_classes, image_size=image_size,
                       logits_relu=spec.get("logits_relu", True), dropout=spec.get("dropout", True))
    if family == "resnet":
        from qd.models.resnet import resnet
        from qd.models.specs import parse_resnet

        depth, width = parse_resnet(spec["name"])
        return resnet(depth, width * spec.get("width", 1.0), num_classes=num_classes, in_channels=in_channels)
    if family == "wrn":
        from qd.models.specs import parse_wrn
        from qd.models.wide_resnet import wide_resnet

        depth, widen = parse_wrn(spec["name"])
        return wide_resnet(depth, widen, num_classes=num_classes, in_channels=in_channels,
                           dropout=spec.get("dropout_rate", 0.3) if spec.get("dropout", True) else 0.0,
                           final_bn_momentum=spec.get("final_bn_momentum", 0.9), image_size=image_size,
                           width=spec.get("width", 1.0))
    raise ValueError(f"unknown classification model family {family!r}; known: convnet, resnet, wrn")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
