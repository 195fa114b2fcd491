"""Model builders by family. ``build_model(spec)`` takes the ``model`` block of a run spec."""
from __future__ import annotations

from qd.models.specs import FAMILY_MODELS


def known_models(family: str) -> tuple[str, ...]:
    return FAMILY_MODELS.get(family, ())


def build_model(spec: dict, in_channels: int, num_classes: int, image_size: int):
    """A freshly initialised model from a run spec's ``model`` block and the dataset's shape."""
    family = spec.get("family", "convnet")
    if family == "convnet":
        from qd.models.convnet import convnet

        return convnet(spec["name"], width=spec.get("width", 1.0), in_channels=in_channels,
                       num_classes=num_classes, image_size=image_size,
                       logits_relu=spec.get("logits_relu", True), dropout=spec.get("dropout", True))
    raise ValueError(f"unknown model family {family!r}; known: {tuple(FAMILY_MODELS)}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
