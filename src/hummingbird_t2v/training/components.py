"""Build the three model components a trainer needs from a `ModelConfig`.

Each `ComponentSpec` names a model folder (weights are loaded) or a registered class with a
preset and/or config fields (built with random weights, seeded by `model.init_seed` so every
rank builds the same network). The text encoder can be any registered module with
`encode(prompts) -> (b, L, d)`; the VAE any module with `encode(frames)` / `decode(latents)`
and a `config` carrying `latent_channels` and `downsample_factor`.

A U-Net (`model.unet.path`, or the teachers and students of the distillation objectives, see
`load_unet`) can also come from a checkpoint file in any format `checkpoints.formats` reads: a
full VideoCrafter2 / Hummingbird checkpoint (only its U-Net is used) or bare U-Net weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn

from hummingbird_t2v.checkpoints.components import split_components
from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    INDEX_NAME,
    assign_state_dict,
    load_component,
    read_json,
)
from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.unet_keys import infer_unet_config, match_unet_preset
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.registry import COMPONENT_CLASSES, build_component
from hummingbird_t2v.models.unet import (
    UNet3D,
    add_frame_caption_embedding,
    add_frame_position_embedding,
    add_spatiotemporal_convs,
)
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.training.config import ComponentSpec, ModelConfig

__all__ = [
    "Components",
    "build_components",
    "build_from_spec",
    "check_compatible",
    "freeze",
    "load_unet",
    "unet_config_at",
    "unet_config_of_spec",
]

# The class a role gets when the spec names none.
DEFAULT_CLASSES = {
    "unet": "UNet3D",
    "vae": "VideoVAE",
    "text_encoder": "OpenCLIPTextEncoder",
    "prior": "CaptionMeanPrior",
}


@dataclass
class Components:
    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    prior: nn.Module | None = None


def _preset_config(class_name: str, preset: str) -> dict[str, Any]:
    _, config_class = COMPONENT_CLASSES[class_name]
    if class_name == "UNet3D":
        return get_unet_preset(preset).to_dict()
    preset_fn = getattr(config_class, "preset", None)
    if preset_fn is None:
        raise ConfigError(f"{class_name} has no presets; give its fields under 'config' instead of preset={preset!r}")
    return preset_fn(preset).to_dict()


# Config fields that may be switched on for a component loaded from a path: each adds a module that
# starts as the identity, so the loaded weights keep computing what they did.
_UNET_ADDITIONS = {
    "frame_position_embedding": add_frame_position_embedding,
    "frame_caption_embedding": add_frame_caption_embedding,
    "spatiotemporal_conv": add_spatiotemporal_convs,
}
ADDABLE_WITH_PATH = {"unet": set(_UNET_ADDITIONS)}


def _with_additions(unet: nn.Module, changes: dict[str, Any]) -> nn.Module:
    if not isinstance(unet, UNet3D):
        raise ConfigError(f"model.unet.config can switch on {sorted(changes)} only for a UNet3D, not a {type(unet).__name__}")
    for name, wanted in changes.items():
        if not isinstance(wanted, bool):
            raise ConfigError(f"model.unet.config.{name} must be true or false, got {wanted!r}")
        present = getattr(unet.config, name)
        if wanted and not present:
            unet = _UNET_ADDITIONS[name](unet)
        elif not wanted and present:
            raise ConfigError(f"model.unet.config.{name}=false cannot remove the module a loaded U-Net has")
    return unet


# What to do when a model folder lacks a role's sub-folder.
_MISSING_SUBFOLDER_HINTS = {
    "unet": "point it at a model folder with unet/ or at a U-Net folder",
    "vae": "point it at the model folder the U-Net was trained with (it has vae/) or at a VAE folder",
    "text_encoder": "point it at the model folder the U-Net was trained with (it has text_encoder/) or at a text-encoder folder",
    "prior": "add one with `hummingbird train prior`, or leave model.prior out",
}


def _folder_for(path: Path, role: str, what: str | None = None) -> tuple[Path, str | None]:
    """(component folder, class name from model_index.json or None) for a model or component folder.

    `what` names the setting in error messages (default model.<role>.path).
    """
    what = what or f"model.{role}.path"
    if (path / INDEX_NAME).is_file():
        if not (path / role / CONFIG_NAME).is_file():
            raise ConfigError(
                f"{what} {path} is a model folder without {role}/ (no {role}/{CONFIG_NAME}); "
                f"{_MISSING_SUBFOLDER_HINTS[role]}"
            )
        index = read_json(path / INDEX_NAME)
        return path / role, index.get("components", {}).get(role)
    if (path / CONFIG_NAME).is_file():
        return path, None
    raise ConfigError(
        f"{path} is neither a model folder (with {INDEX_NAME}) nor a component folder (with {CONFIG_NAME}); fix {what}"
    )


def build_from_spec(spec: ComponentSpec, role: str) -> nn.Module:
    """One component: loaded from `spec.path`, or built from class + preset + config fields."""
    if spec.path:
        path = Path(spec.path).expanduser()
        if not path.exists():
            raise ConfigError(f"model.{role}.path {path} does not exist; point it at a model or component folder")
        if spec.preset or set(spec.config) - ADDABLE_WITH_PATH.get(role, set()):
            raise ConfigError(
                f"model.{role}: give either path (load weights) or preset/config (build afresh), not both "
                f"(with a path, config may only switch on {sorted(ADDABLE_WITH_PATH.get(role, ())) or 'nothing'})"
            )
        if spec.config:
            return _with_additions(build_from_spec(ComponentSpec(path=spec.path, class_name=spec.class_name), role), spec.config)
        if path.is_file():
            if role != "unet" or (spec.class_name or "UNet3D") != "UNet3D":
                raise ConfigError(
                    f"model.{role}.path {path} is a file; only a U-Net loads from a checkpoint file. Convert the "
                    f"checkpoint into a model folder (hummingbird convert {path} DIR) and point model.{role}.path at DIR"
                )
            return load_unet(path, what="model.unet")
        folder, indexed_class = _folder_for(path, role)
        class_name = spec.class_name or indexed_class or DEFAULT_CLASSES[role]
        _require_registered(class_name, role)
        try:
            return load_component(folder, lambda config: build_component(class_name, config))
        except ConfigError as error:
            if spec.class_name or indexed_class:
                raise
            # A bare component folder does not name its class: the default may be the wrong one.
            raise ConfigError(
                f"{error}; {folder} is a bare component folder, loaded as the default {class_name}: "
                f"if it holds another class, name it with model.{role}.class_name (e.g. WordTextEncoder)"
            ) from None
    class_name = spec.class_name or DEFAULT_CLASSES[role]
    _require_registered(class_name, role)
    config = _preset_config(class_name, spec.preset) if spec.preset else {}
    config.update(spec.config)
    if not config:
        raise ConfigError(f"model.{role} needs a path, a preset or config fields")
    return build_component(class_name, config)


def load_unet(path: str | Path, *, what: str = "U-Net") -> nn.Module:
    """A U-Net in eval mode from a model folder (its unet/), a U-Net component folder, or a checkpoint
    file (a full VC2 / Hummingbird checkpoint, of which only the U-Net is read, or bare U-Net weights).

    `what` names the setting in error messages (e.g. "objective.student").
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist; give a model folder, a U-Net folder or a checkpoint file")
    if path.is_dir():
        folder, indexed_class = _folder_for(path, "unet", what)
        class_name = indexed_class or DEFAULT_CLASSES["unet"]
        _require_registered(class_name, "unet")
        return load_component(folder, lambda config: build_component(class_name, config))
    # Floats are read as float32: what is trained and the teacher's default precision.
    unet_weights = split_components(read_checkpoint(path).state_dict).unet
    if not unet_weights:
        raise CheckpointError(
            f"{what} {path} holds no U-Net weights (official names, optionally prefixed model.diffusion_model.); "
            "give a VideoCrafter2 / Hummingbird checkpoint, a model folder or a U-Net folder"
        )
    preset = match_unet_preset(unet_weights)
    config = get_unet_preset(preset) if preset else infer_unet_config(unet_weights)
    with init_empty_weights(include_buffers=False):  # parameters on the meta device, buffers real
        unet = UNet3D(config)
    return assign_state_dict(unet, unet_weights, component=f"the U-Net of {path}")


def unet_config_at(path: str | Path) -> UNetConfig | None:
    """The U-Net config stored in a model or U-Net folder, without loading weights (None for a file)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return None
    folder, _ = _folder_for(path, "unet")
    return UNetConfig.from_dict(read_json(folder / CONFIG_NAME))


def unet_config_of_spec(spec: ComponentSpec) -> UNetConfig | None:
    """The config of the U-Net a spec describes, without building it (None for a checkpoint file)."""
    if spec.path:
        return unet_config_at(spec.path)
    config = _preset_config("UNet3D", spec.preset) if spec.preset else {}
    config.update(spec.config)
    return UNetConfig.from_dict(config)


def _require_registered(class_name: str, role: str) -> None:
    if class_name not in COMPONENT_CLASSES:
        raise ConfigError(
            f"model.{role}.class_name {class_name!r} is not a registered component class; "
            f"known: {sorted(COMPONENT_CLASSES)}"
        )


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: the VAE and text encoder never train here."""
    module.requires_grad_(False)
    return module.eval()


def build_components(config: ModelConfig) -> Components:
    """Build all three (and the optional prior); the random initialisation is seeded so every rank
    gets the same network."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        unet = build_from_spec(config.unet, "unet")
        vae = freeze(build_from_spec(config.vae, "vae"))
        text_encoder = freeze(build_from_spec(config.text_encoder, "text_encoder"))
    for name, module in (("vae", vae), ("text_encoder", text_encoder)):
        if not callable(getattr(module, "encode", None)):
            raise ConfigError(f"model.{name} ({type(module).__name__}) has no encode(); it cannot condition training")
    prior = _load_prior(config.prior) if config.prior is not None else None
    return Components(unet=unet, vae=vae, text_encoder=text_encoder, prior=prior)


def _load_prior(spec: ComponentSpec) -> nn.Module:
    # A prior is fitted to the frozen VAE's latents (`hummingbird train prior`), never built at random here.
    if not spec.path:
        raise ConfigError(
            "model.prior needs a path: a model folder with prior/ or a prior folder (fit one with `hummingbird train prior`)"
        )
    return freeze(build_from_spec(spec, "prior"))


def check_compatible(unet: nn.Module, vae: nn.Module, context: torch.Tensor, prior: nn.Module | None = None) -> None:
    """Raise ConfigError when the U-Net (or the prior) does not fit the VAE's latents or the text
    encoder's context."""
    unet_config = getattr(unet, "config", None)
    vae_config = getattr(vae, "config", None)
    latent_channels = getattr(vae_config, "latent_channels", None)
    prior_config = getattr(prior, "config", None)
    if prior_config is not None:
        if latent_channels is not None and prior_config.latent_channels != latent_channels:
            raise ConfigError(
                f"model.prior predicts {prior_config.latent_channels}-channel latents but the VAE makes "
                f"{latent_channels}-channel ones; fit a prior for this VAE (hummingbird train prior)"
            )
        if prior_config.context_dim != context.shape[-1]:
            raise ConfigError(
                f"model.prior reads {prior_config.context_dim}-wide text tokens but the text encoder gives "
                f"{context.shape[-1]}-wide ones; fit a prior for this text encoder (hummingbird train prior)"
            )
    if unet_config is None:
        return
    if latent_channels is not None and unet_config.in_channels != latent_channels:
        raise ConfigError(
            f"the U-Net takes {unet_config.in_channels} input channels but the VAE makes {latent_channels}-channel "
            f"latents; set model.unet.config.in_channels/out_channels to {latent_channels}"
        )
    if context.shape[-1] != unet_config.context_dim:
        raise ConfigError(
            f"the text encoder gives {context.shape[-1]}-wide context but the U-Net cross-attends to "
            f"context_dim={unet_config.context_dim}; set model.unet.config.context_dim={context.shape[-1]}"
        )
