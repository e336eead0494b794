"""Ground-truth attributes of a toy scene as class labels, shared by the text and video probes.

A scene's attributes (`ToyClip.attributes`, or `scene_attributes(scene)` without rendering) are
strings; each classifier head predicts one attribute over the fixed class list below, so class
indices never depend on which clips a model happened to see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.toyworld.scene import SceneSpec
from hummingbird_t2v.toyworld.vocabulary import BACKGROUNDS, CAMERAS, COLORS, MOTIONS, SHAPES, SIZES

NONE = "none"  # the second-object attributes of a one-object scene

ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "color": COLORS,
    "size": SIZES,
    "motion": MOTIONS,
    "background": BACKGROUNDS,
    "background_color": COLORS,
    "camera": CAMERAS,
    "shape2": (NONE, *SHAPES),
    "color2": (NONE, *COLORS),
    "motion2": (NONE, *MOTIONS),
}


def scene_attributes(scene: SceneSpec) -> dict[str, str]:
    """The attributes of ATTRIBUTE_CLASSES for a scene (second-object ones are "none" when alone)."""
    first = scene.objects[0]
    second = scene.objects[1] if len(scene.objects) > 1 else None
    return {
        "shape": first.shape,
        "color": first.color,
        "size": first.size,
        "motion": first.motion,
        "background": scene.background.kind,
        "background_color": scene.background.color,
        "camera": scene.camera.kind,
        "shape2": second.shape if second else NONE,
        "color2": second.color if second else NONE,
        "motion2": second.motion if second else NONE,
    }


def label_tensor(attributes: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Class indices (n,) per attribute name; empty strings (ToyClip's "no second object") read as "none"."""
    labels = {}
    for name in names:
        if name not in ATTRIBUTE_CLASSES:
            raise ConfigError(f"unknown toy attribute {name!r}; known: {', '.join(ATTRIBUTE_CLASSES)}")
        classes = ATTRIBUTE_CLASSES[name]
        indices = []
        for row in attributes:
            value = str(row.get(name, "")) or NONE
            if value not in classes:
                raise ConfigError(f"{name}={value!r} is not a toy-world value; expected one of {', '.join(classes)}")
            indices.append(classes.index(value))
        labels[name] = torch.tensor(indices, dtype=torch.long)
    return labels
