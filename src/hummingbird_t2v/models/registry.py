"""Component classes by name, so a model folder's `model_index.json` says what to build.

Every component is an nn.Module built from one config dataclass (`Module(Config.from_dict(d))`,
`module.config.to_dict()`). Text encoders also provide `encode(prompts) -> (b, L, context_dim)`
with their own tokenizer inside, so pipelines and trainers never see token ids.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.caption_prior import CaptionMeanPrior, CaptionPriorConfig
from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder, TextEncoderConfig
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
from hummingbird_t2v.models.word_text_encoder import (
    WordTextEncoder,
    WordTextEncoderConfig,
)

COMPONENT_CLASSES: dict[str, tuple[type[nn.Module], Any]] = {
    "UNet3D": (UNet3D, UNetConfig),
    "VideoVAE": (VideoVAE, VAEConfig),
    "OpenCLIPTextEncoder": (OpenCLIPTextEncoder, TextEncoderConfig),
    "WordTextEncoder": (WordTextEncoder, WordTextEncoderConfig),
    "CaptionMeanPrior": (CaptionMeanPrior, CaptionPriorConfig),
}


def register_component(module_class: type[nn.Module], config_class: Any) -> None:
    COMPONENT_CLASSES[module_class.__name__] = (module_class, config_class)


def component_class_name(module: nn.Module) -> str:
    name = type(module).__name__
    if name not in COMPONENT_CLASSES:
        raise CheckpointError(f"{name} is not a registered component class; register it with register_component")
    return name


def build_component(class_name: str, config: dict[str, Any]) -> nn.Module:
    if class_name not in COMPONENT_CLASSES:
        known = ", ".join(sorted(COMPONENT_CLASSES))
        raise CheckpointError(f"unknown component class {class_name!r} in model_index.json; this version knows {known}")
    module_class, config_class = COMPONENT_CLASSES[class_name]
    return module_class(config_class.from_dict(config))
