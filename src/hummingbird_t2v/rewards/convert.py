"""open_clip / OpenAI-CLIP key layout -> transformers CLIP names, for both towers.

Vision tower (bare names, i.e. after the ``visual.`` prefix; ViCLIP's ``vision_encoder.`` uses
the same names):

    conv1.weight  (W, 3, p, p) or (W, 3, 1, p, p)  -> vision_model.embeddings.patch_embedding.weight (W, 3, p, p)
                                                      (no bias; a Conv3d with temporal kernel 1 is squeezed)
    class_embedding (W,)                           -> vision_model.embeddings.class_embedding
    positional_embedding (1 + (S/p)^2, W)          -> vision_model.embeddings.position_embedding.weight
    ln_pre.*                                       -> vision_model.pre_layrnorm.*   (sic, transformers' spelling)
    transformer.resblocks.{i}.ln_1.*               -> vision_model.encoder.layers.{i}.layer_norm1.*
    transformer.resblocks.{i}.attn.in_proj_*       -> vision_model.encoder.layers.{i}.self_attn.{q,k,v}_proj.*
                                                      (rows [q; k; v], as nn.MultiheadAttention packs them)
    transformer.resblocks.{i}.attn.out_proj.*      -> vision_model.encoder.layers.{i}.self_attn.out_proj.*
    transformer.resblocks.{i}.ln_2.*               -> vision_model.encoder.layers.{i}.layer_norm2.*
    transformer.resblocks.{i}.mlp.c_fc.*           -> vision_model.encoder.layers.{i}.mlp.fc1.*
    transformer.resblocks.{i}.mlp.c_proj.*         -> vision_model.encoder.layers.{i}.mlp.fc2.*
    ln_post.*                                      -> vision_model.post_layernorm.*
    proj (W, D), used as x @ proj                  -> visual_projection.weight (D, W) = proj.T

Both compute the same thing: pre-norm blocks, the class token taken after the last block,
LayerNorm'd, projected. (open_clip applies ``ln_post`` to every token and then takes token 0;
transformers LayerNorms token 0 only: the same numbers.)

Text tower: `checkpoints.open_clip_keys` converts the blocks (shared with the U-Net's text
encoder); here ``text_projection`` (W, D) becomes ``text_projection.weight`` = its transpose and
everything is prefixed ``text_model.``. transformers pools the text at the first end-of-text
token, open_clip at ``argmax(ids)``: the same position, because the end token 49407 is the
largest id in CLIP's vocabulary.

Number of heads and the activation are not visible in the shapes and are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

from hummingbird_t2v.checkpoints.open_clip_keys import (
    RESBLOCK_KEY,
    RESBLOCK_PARTS,
    convert_open_clip_text_state_dict,
    text_config_from_open_clip_state_dict,
)
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.tokenizer import END_OF_TEXT_ID, PAD_ID, START_OF_TEXT_ID, VOCAB_SIZE

_VISION_TOP_LEVEL = {
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight",
    "ln_post.bias": "vision_model.post_layernorm.bias",
}
_VISION_REQUIRED = (
    "conv1.weight",
    "class_embedding",
    "positional_embedding",
    "proj",
    "transformer.resblocks.0.mlp.c_fc.weight",
)
# open_clip's head width is 64 except for ViT-H (80); OpenAI's ViT-L/14 and ViT-B use 64 as well.
_KNOWN_VISION_HEADS = {768: 12, 1024: 16, 1280: 16}


def split_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _block_indices(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    indices = sorted({int(m[1]) for key in state_dict if (m := RESBLOCK_KEY.fullmatch(key))})
    if indices != list(range(len(indices))):
        raise CheckpointError(f"transformer block indices are not contiguous from 0: {indices}")
    return indices


def vision_config_from_open_clip(
    visual: Mapping[str, torch.Tensor], num_heads: int | None = None, activation: str = "gelu"
) -> CLIPVisionConfig:
    """transformers config of a bare open_clip/OpenAI visual tower, read from its shapes."""
    missing = [key for key in _VISION_REQUIRED if key not in visual]
    if missing:
        raise CheckpointError(f"not a CLIP vision tower: {missing} missing (keys seen: {sorted(visual)[:6]})")
    width, _, *kernel = visual["conv1.weight"].shape
    if len(kernel) == 3 and kernel[0] != 1:
        raise CheckpointError(
            f"conv1 has a temporal kernel of {kernel[0]}; only kernel 1 (per-frame patches) is supported"
        )
    patch = int(kernel[-1])
    positions = visual["positional_embedding"].shape[0] - 1
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise CheckpointError(f"positional_embedding has {positions} patch positions, not a square grid")
    if num_heads is None:
        if int(width) not in _KNOWN_VISION_HEADS:
            raise ConfigError(f"cannot guess the number of attention heads for vision width {width}; pass vision_heads")
        num_heads = _KNOWN_VISION_HEADS[int(width)]
    if width % num_heads:
        raise ConfigError(f"vision width {width} is not divisible by {num_heads} heads")
    return CLIPVisionConfig(
        hidden_size=int(width),
        intermediate_size=int(visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=len(_block_indices(visual)),
        num_attention_heads=num_heads,
        image_size=grid * patch,
        patch_size=patch,
        projection_dim=int(visual["proj"].shape[1]),
        hidden_act=activation,
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
    )


def convert_open_clip_vision(visual: Mapping[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """Bare visual-tower keys -> CLIPVisionModelWithProjection names (see the module docstring)."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, tensor in visual.items():
        if key in _VISION_TOP_LEVEL:
            converted[_VISION_TOP_LEVEL[key]] = tensor
        elif key == "conv1.weight":
            converted["vision_model.embeddings.patch_embedding.weight"] = (
                tensor.squeeze(2) if tensor.ndim == 5 else tensor
            )
        elif key == "proj":
            converted["visual_projection.weight"] = tensor.t().contiguous()
        elif match := RESBLOCK_KEY.fullmatch(key):
            prefix = f"vision_model.encoder.layers.{match[1]}."
            if not _convert_block_part(match[2], tensor, prefix, width, converted):
                unknown.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} vision-tower keys are not part of a plain CLIP ViT, e.g. {unknown[:5]}; "
            "attention pooling, layer scale and other open_clip variants are not supported"
        )
    return converted


def _convert_block_part(part: str, tensor: torch.Tensor, prefix: str, width: int, out: dict[str, torch.Tensor]) -> bool:
    if part in RESBLOCK_PARTS:
        out[prefix + RESBLOCK_PARTS[part]] = tensor
        return True
    if part in ("attn.in_proj_weight", "attn.in_proj_bias") and tensor.shape[0] == 3 * width:
        suffix = "weight" if part.endswith("weight") else "bias"
        for name, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
            out[f"{prefix}self_attn.{name}_proj.{suffix}"] = chunk
        return True
    return False


def text_config_and_weights_from_open_clip(
    text: Mapping[str, torch.Tensor], num_heads: int | None = None, activation: str = "gelu"
) -> tuple[CLIPTextConfig, dict[str, torch.Tensor]]:
    """Bare open_clip text-tower keys (all blocks, ``text_projection``) -> CLIPTextModelWithProjection."""
    if "text_projection" not in text:
        raise CheckpointError("the text tower has no 'text_projection'; it cannot produce CLIP text features")
    base = text_config_from_open_clip_state_dict(text, num_heads=num_heads, layer="last")
    base = replace(base, activation=activation)
    converted = {f"text_model.{k}": v for k, v in convert_open_clip_text_state_dict(text, base).items()}
    projection = text["text_projection"]
    converted["text_projection.weight"] = projection.t().contiguous()
    config = base.clip_text_config()
    config.projection_dim = int(projection.shape[1])
    return config, converted


def clip_text_config(**overrides: object) -> CLIPTextConfig:
    """A CLIPTextConfig with CLIP's special-token ids (transformers' defaults are not CLIP's)."""
    settings: dict[str, object] = {
        "vocab_size": VOCAB_SIZE,
        "bos_token_id": START_OF_TEXT_ID,
        "eos_token_id": END_OF_TEXT_ID,
        "pad_token_id": PAD_ID,
        "attention_dropout": 0.0,
        "layer_norm_eps": 1e-5,
    }
    settings.update(overrides)
    return CLIPTextConfig(**settings)


def convert_open_clip_model(
    state_dict: Mapping[str, torch.Tensor],
    vision_heads: int | None = None,
    text_heads: int | None = None,
    activation: str = "gelu",
) -> tuple[CLIPConfig, dict[str, torch.Tensor]]:
    """A whole bare open_clip CLIP state dict -> (CLIPConfig, CLIPModel state dict)."""
    visual = split_prefix(state_dict, "visual.")
    if not visual:
        raise CheckpointError(
            f"no 'visual.*' keys: this is not an open_clip CLIP state dict (keys seen: {sorted(state_dict)[:6]})"
        )
    text = {k: v for k, v in state_dict.items() if not k.startswith("visual.") and k != "logit_scale"}
    vision_config = vision_config_from_open_clip(visual, vision_heads, activation)
    converted = convert_open_clip_vision(visual, vision_config.hidden_size)
    text_config, text_weights = text_config_and_weights_from_open_clip(text, text_heads, activation)
    if text_config.projection_dim != vision_config.projection_dim:
        raise CheckpointError(
            f"image and text projections differ in size ({vision_config.projection_dim} vs "
            f"{text_config.projection_dim}); the file does not hold one CLIP model"
        )
    converted.update(text_weights)
    converted["logit_scale"] = state_dict.get("logit_scale", torch.tensor(4.6052))  # ln(100) if absent
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=vision_config.projection_dim,
    )
    return config, converted
