"""Load a teacher (or any U-Net to prune) from whatever the user has: a model folder, a U-Net component
folder, a full checkpoint file in any supported format, or a file holding only U-Net weights.

A full model keeps its VAE and text encoder, so that the pruned student can be written as a complete
model folder; a bare U-Net stays a bare U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights

from hummingbird_t2v.checkpoints.components import split_components
from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    assign_state_dict,
    load_component,
)
from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.hub import resolve_checkpoint
from hummingbird_t2v.checkpoints.unet_keys import infer_unet_config, match_unet_preset
from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline


@dataclass
class LoadedModel:
    unet: UNet3D
    pipeline: HummingbirdPipeline | None  # the whole model when the source had a VAE and a text encoder
    source: Path


def load_model_or_unet(
    path_or_id: str | Path, *, dtype: torch.dtype = torch.float32, text_num_heads: int | None = None
) -> LoadedModel:
    """Read `path_or_id` (folder, file or hub id) in eval mode on the CPU, floats cast to `dtype`."""
    path = resolve_checkpoint(str(path_or_id))
    if path.is_dir():
        if (path / INDEX_NAME).is_file():
            pipe = HummingbirdPipeline.from_pretrained(path, torch_dtype=dtype)
            return LoadedModel(pipe.unet, pipe, path)
        if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
            unet = load_component(path, lambda config: UNet3D(UNetConfig.from_dict(config)), dtype=dtype)
            return LoadedModel(unet, None, path)
        raise CheckpointError(
            f"{path} is neither a model folder ({INDEX_NAME}) nor a U-Net folder ({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    parts = split_components(read_checkpoint(path).state_dict, dtype=dtype)
    if not parts.unet:
        raise CheckpointError(
            f"{path} holds no U-Net weights (official names, optionally prefixed model.diffusion_model.); "
            "pass a VideoCrafter2 / Hummingbird checkpoint, a model folder or a U-Net folder"
        )
    if parts.vae and parts.text_encoder:
        # A full model: let the pipeline loader build all three components (it reads the file itself).
        del parts
        pipe = HummingbirdPipeline.from_pretrained(path, text_num_heads=text_num_heads, torch_dtype=dtype)
        return LoadedModel(pipe.unet, pipe, path)
    preset = match_unet_preset(parts.unet)
    config = get_unet_preset(preset) if preset else infer_unet_config(parts.unet)
    with init_empty_weights():
        unet = UNet3D(config)
    return LoadedModel(assign_state_dict(unet, parts.unet, component="U-Net"), None, path)
