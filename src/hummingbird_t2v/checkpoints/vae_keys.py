"""Original LDM VAE parameter names -> diffusers `AutoencoderKL` names.

The official checkpoints store the VAE as `lvdm.models.autoencoder.AutoencoderKL` (under the
prefix `first_stage_model.`); our `VideoVAE` holds a diffusers `AutoencoderKL` of the same
structure. The renames, level by level:

    encoder.down.{i}.block.{j}.*        -> encoder.down_blocks.{i}.resnets.{j}.*
    encoder.down.{i}.downsample.conv.*  -> encoder.down_blocks.{i}.downsamplers.0.conv.*
    decoder.up.{i}.block.{j}.*          -> decoder.up_blocks.{L-1-i}.resnets.{j}.*
    decoder.up.{i}.upsample.conv.*      -> decoder.up_blocks.{L-1-i}.upsamplers.0.conv.*
    {en,de}coder.mid.block_{1,2}.*      -> {en,de}coder.mid_block.resnets.{0,1}.*
    {en,de}coder.mid.attn_1.{norm,q,k,v,proj_out}.*
                                        -> {en,de}coder.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}.*
    {en,de}coder.norm_out.*             -> {en,de}coder.conv_norm_out.*
    resnet nin_shortcut.*               -> conv_shortcut.*

The LDM decoder numbers its levels shallow-to-deep (`up.0` is the full-resolution level, run
last) while diffusers numbers them in execution order, hence `L-1-i`. The LDM attention uses
1x1 convolutions for q/k/v/proj_out; diffusers uses Linear layers, so those (C, C, 1, 1)
weights are reshaped to (C, C).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from hummingbird_t2v.checkpoints.unet_keys import check_state_dict_fits
from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE

# Training checkpoints of the original autoencoder also carry the LPIPS/discriminator loss.
_TRAINING_ONLY_PREFIX = "loss."

_RESNET_PARTS = {
    "norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut",
}
_ATTENTION_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_PARAM = r"(weight|bias)"


def _rename(key: str, num_levels: int) -> str | None:
    """The diffusers name of one LDM VAE key, or None when the key is not part of the VAE."""
    if re.fullmatch(rf"(quant_conv|post_quant_conv|(encoder|decoder)\.(conv_in|conv_out))\.{_PARAM}", key):
        return key  # same name in both layouts
    if match := re.fullmatch(rf"(encoder|decoder)\.norm_out\.{_PARAM}", key):
        return f"{match[1]}.conv_norm_out.{match[2]}"
    if match := re.fullmatch(rf"(encoder|decoder)\.mid\.block_([12])\.(\w+)\.{_PARAM}", key):
        if match[3] in _RESNET_PARTS:
            return f"{match[1]}.mid_block.resnets.{int(match[2]) - 1}.{_RESNET_PARTS[match[3]]}.{match[4]}"
    if match := re.fullmatch(rf"(encoder|decoder)\.mid\.attn_1\.(\w+)\.{_PARAM}", key):
        if match[2] in _ATTENTION_PARTS:
            return f"{match[1]}.mid_block.attentions.0.{_ATTENTION_PARTS[match[2]]}.{match[3]}"
    if match := re.fullmatch(rf"encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)\.{_PARAM}", key):
        if match[3] in _RESNET_PARTS:
            return f"encoder.down_blocks.{match[1]}.resnets.{match[2]}.{_RESNET_PARTS[match[3]]}.{match[4]}"
    if match := re.fullmatch(rf"encoder\.down\.(\d+)\.downsample\.conv\.{_PARAM}", key):
        return f"encoder.down_blocks.{match[1]}.downsamplers.0.conv.{match[2]}"
    if match := re.fullmatch(rf"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.{_PARAM}", key):
        if match[3] in _RESNET_PARTS:
            level = num_levels - 1 - int(match[1])
            return f"decoder.up_blocks.{level}.resnets.{match[2]}.{_RESNET_PARTS[match[3]]}.{match[4]}"
    if match := re.fullmatch(rf"decoder\.up\.(\d+)\.upsample\.conv\.{_PARAM}", key):
        level = num_levels - 1 - int(match[1])
        return f"decoder.up_blocks.{level}.upsamplers.0.conv.{match[2]}"
    return None


def expected_diffusers_shapes(vae_config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the diffusers `AutoencoderKL` state dict for this config (built on meta)."""
    with torch.device("meta"):
        model = VideoVAE(vae_config).autoencoder
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def convert_ldm_vae_state_dict(
    state_dict: Mapping[str, torch.Tensor], vae_config: VAEConfig
) -> dict[str, torch.Tensor]:
    """Bare LDM VAE keys (`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`) -> diffusers keys.

    Every VAE key must be consumed and every diffusers parameter produced with the right shape;
    otherwise a `CheckpointError` names the offending keys. Tensors keep their dtype.
    """
    expected = expected_diffusers_shapes(vae_config)
    num_levels = len(vae_config.channel_multipliers)
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(_TRAINING_ONLY_PREFIX):
            continue
        new_key = _rename(key, num_levels)
        if new_key is None or new_key not in expected:
            unknown.append(key)
            continue
        if ".mid.attn_1." in key and key.endswith(".weight") and tensor.ndim == 4:
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])  # 1x1 conv -> Linear
        converted[new_key] = tensor
    if unknown:
        hint = ""
        if any(key.startswith("first_stage_model.") for key in unknown):
            hint = " (strip the 'first_stage_model.' prefix first)"
        raise CheckpointError(
            f"{len(unknown)} VAE keys do not belong to a VAE of this config{hint}, e.g. {unknown[:5]}; "
            "check that the checkpoint and the VAE config match"
        )
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise CheckpointError(
            f"the VAE checkpoint lacks {len(missing)} parameters, e.g. {missing[:5]}; "
            "the file is incomplete or made for another VAE config"
        )
    check_state_dict_fits(expected, converted, component="VAE")
    return converted


def load_ldm_vae_weights(vae: VideoVAE, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Convert bare LDM VAE weights and load them strictly into `vae` (cast to its dtype)."""
    vae.autoencoder.load_state_dict(convert_ldm_vae_state_dict(state_dict, vae.config), strict=True)


def vae_config_from_ldm_state_dict(state_dict: Mapping[str, torch.Tensor]) -> VAEConfig:
    """Read the autoencoder's shape from its (bare) LDM parameter names and shapes."""
    try:
        conv_in = state_dict["encoder.conv_in.weight"]
        base_channels = conv_in.shape[0]
        levels = sorted({int(m.group(1)) for key in state_dict if (m := re.match(r"encoder\.down\.(\d+)\.", key))})
        multipliers = tuple(state_dict[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // base_channels for i in levels)
        blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", key))}
        return VAEConfig(
            in_channels=conv_in.shape[1],
            out_channels=state_dict["decoder.conv_out.weight"].shape[0],
            base_channels=base_channels,
            channel_multipliers=multipliers,
            layers_per_block=len(blocks),
            latent_channels=state_dict["post_quant_conv.weight"].shape[0],
        )
    except KeyError as error:
        raise CheckpointError(
            f"the VAE weights lack {error.args[0]!r}; they are not an LDM/SD KL autoencoder (first_stage_model.*)"
        ) from None
