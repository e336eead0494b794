"""Build the three pipeline components from one official-layout weights file (any supported format).

The file holds the whole LatentDiffusion model: U-Net under `model.diffusion_model.`, VAE under
`first_stage_model.`, OpenCLIP text tower under `cond_stage_model.model.` (checkpoints/components.py).
Each component's structure is read from its tensors' names and shapes, checked against the preset the
user names (if any), built on the meta device and filled strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights

from hummingbird_t2v.checkpoints.components import split_components
from hummingbird_t2v.checkpoints.folder import assign_state_dict
from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.open_clip_keys import (
    convert_open_clip_text_state_dict,
    text_config_from_open_clip_state_dict,
)
from hummingbird_t2v.checkpoints.unet_keys import check_state_dict_fits, infer_unet_config, match_unet_preset
from hummingbird_t2v.checkpoints.vae_keys import convert_ldm_vae_state_dict, vae_config_from_ldm_state_dict
from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset
from hummingbird_t2v.models.vae import VideoVAE


@dataclass
class PipelineComponents:
    unet: UNet3D
    vae: VideoVAE
    text_encoder: OpenCLIPTextEncoder
    source_format: str
    unet_preset: str | None


def load_pipeline_components(
    path: str | Path,
    *,
    model: str | None = None,
    text_num_heads: int | None = None,
    unet_num_head_channels: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> PipelineComponents:
    """`model` names the U-Net preset the file must match (checked); without it the structure is inferred.
    `text_num_heads` / `unet_num_head_channels` are only needed for non-standard widths, whose head
    counts the tensor shapes do not reveal."""
    checkpoint = read_checkpoint(path)
    parts = split_components(checkpoint.state_dict, dtype=dtype)
    for component, prefix in (("unet", "model.diffusion_model."), ("vae", "first_stage_model."), ("text_encoder", "cond_stage_model.model.")):
        if not getattr(parts, component):
            raise CheckpointError(
                f"{path} has no {component} weights (keys {prefix}*); pass a full checkpoint "
                "(VideoCrafter2 model.ckpt, a Hummingbird *_merged_all.pt) or a folder made by `hummingbird convert`"
            )

    if model is not None:
        config = get_unet_preset(model)
        with init_empty_weights():
            unet = UNet3D(config)
        check_state_dict_fits(unet, parts.unet, component=f"'{model}' U-Net")
        preset: str | None = model
    else:
        preset = match_unet_preset(parts.unet)
        config = get_unet_preset(preset) if preset else infer_unet_config(parts.unet, unet_num_head_channels)
        with init_empty_weights():
            unet = UNet3D(config)
    unet = assign_state_dict(unet, parts.unet, component="U-Net")

    vae_config = vae_config_from_ldm_state_dict(parts.vae)
    with init_empty_weights():
        vae = VideoVAE(vae_config)
    vae = assign_state_dict(vae, _prefixed(convert_ldm_vae_state_dict(parts.vae, vae_config), "autoencoder."), component="VAE")

    text_config = text_config_from_open_clip_state_dict(parts.text_encoder, num_heads=text_num_heads)
    with init_empty_weights(include_buffers=False):
        text_encoder = OpenCLIPTextEncoder(text_config)
    text_weights = _prefixed(convert_open_clip_text_state_dict(parts.text_encoder, text_config), "transformer.")
    text_encoder = assign_state_dict(text_encoder, text_weights, component="text encoder")
    return PipelineComponents(unet, vae, text_encoder, checkpoint.format, preset)


def _prefixed(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state_dict.items()}
