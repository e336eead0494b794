"""open_clip text-tower parameter names -> transformers CLIP text-encoder names.

The official checkpoints store the text tower under `cond_stage_model.model.` with open_clip's
names (strip that prefix before calling these functions):

    token_embedding.weight                      -> embeddings.token_embedding.weight
    positional_embedding                        -> embeddings.position_embedding.weight
    transformer.resblocks.{i}.ln_1.*            -> encoder.layers.{i}.layer_norm1.*
    transformer.resblocks.{i}.attn.in_proj_*    -> encoder.layers.{i}.self_attn.{q,k,v}_proj.*  (rows [q; k; v])
    transformer.resblocks.{i}.attn.out_proj.*   -> encoder.layers.{i}.self_attn.out_proj.*
    transformer.resblocks.{i}.ln_2.*            -> encoder.layers.{i}.layer_norm2.*
    transformer.resblocks.{i}.mlp.c_fc.*        -> encoder.layers.{i}.mlp.fc1.*
    transformer.resblocks.{i}.mlp.c_proj.*      -> encoder.layers.{i}.mlp.fc2.*
    ln_final.*                                  -> final_layer_norm.*

Output names are relative to `OpenCLIPTextEncoder.transformer` (which equals transformers 5's
`CLIPTextModel` state dict). Dropped: `text_projection` and `logit_scale` (contrastive head,
unused for conditioning), `attn_mask` (a constant causal mask some open_clip versions save) and
the blocks beyond those the encoder runs (the last block for layer "penultimate").
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from hummingbird_t2v.checkpoints.unet_keys import check_state_dict_fits
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder, TextEncoderConfig

_UNUSED_KEYS = frozenset({"text_projection", "logit_scale", "attn_mask"})
RESBLOCK_KEY = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)")
RESBLOCK_PARTS = {  # open_clip residual-block names -> transformers CLIP encoder-layer names
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TOP_LEVEL = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}


def _block_indices(state_dict: Mapping[str, torch.Tensor]) -> set[int]:
    return {int(m[1]) for key in state_dict if (m := RESBLOCK_KEY.fullmatch(key))}


def text_config_from_open_clip_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None, layer: str = "penultimate"
) -> TextEncoderConfig:
    """Infer width, depth, vocabulary, context and MLP ratio from bare open_clip text-tower weights.

    The number of heads is invisible in the shapes: pass `num_heads`, or get open_clip's default
    of one head per 64 channels (16 for ViT-H/14).
    """
    for key in ("token_embedding.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight"):
        if key not in state_dict:
            raise CheckpointError(
                f"{key!r} is missing: this is not a bare open_clip text tower "
                "(strip the 'cond_stage_model.model.' prefix first)"
            )
    vocab_size, width = state_dict["token_embedding.weight"].shape
    if num_heads is None:
        if width % 64:
            raise ConfigError(f"cannot guess the number of heads for text width {width}; pass num_heads")
        num_heads = width // 64
    blocks = _block_indices(state_dict)
    if blocks != set(range(len(blocks))):
        raise CheckpointError(f"the text tower's block indices are not contiguous from 0: {sorted(blocks)}")
    return TextEncoderConfig(
        width=int(width),
        layers=len(blocks),
        heads=num_heads,
        vocab_size=int(vocab_size),
        context_length=int(state_dict["positional_embedding"].shape[0]),
        mlp_ratio=state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        layer=layer,  # type: ignore[arg-type]  # validated by TextEncoderConfig
    )


def expected_transformers_shapes(config: TextEncoderConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of `OpenCLIPTextEncoder(config).transformer.state_dict()` (built on meta)."""
    with torch.device("meta"):
        model = OpenCLIPTextEncoder(config).transformer
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def convert_open_clip_text_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: TextEncoderConfig
) -> dict[str, torch.Tensor]:
    """Bare open_clip text-tower keys -> names of `OpenCLIPTextEncoder.transformer`.

    All `config.layers` blocks must be present; only the first `config.blocks_to_run` are
    returned. Raises `CheckpointError` naming unknown, missing or mis-shaped keys.
    """
    expected = expected_transformers_shapes(config)
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    seen_blocks: set[int] = set()
    for key, tensor in state_dict.items():
        if key in _UNUSED_KEYS:
            continue
        if key in _TOP_LEVEL:
            converted[_TOP_LEVEL[key]] = tensor
            continue
        match = RESBLOCK_KEY.fullmatch(key)
        if match is None or int(match[1]) >= config.layers:
            unknown.append(key)
            continue
        index, part = int(match[1]), match[2]
        seen_blocks.add(index)
        if index >= config.blocks_to_run:
            continue  # the last block is not run for layer "penultimate"
        prefix = f"encoder.layers.{index}."
        if part in RESBLOCK_PARTS:
            converted[prefix + RESBLOCK_PARTS[part]] = tensor
        elif part in ("attn.in_proj_weight", "attn.in_proj_bias"):
            # nn.MultiheadAttention packs the three projections as rows [q; k; v].
            if tensor.shape[0] != 3 * config.width:
                unknown.append(f"{key} {tuple(tensor.shape)}")
                continue
            suffix = "weight" if part.endswith("weight") else "bias"
            for name, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
                converted[f"{prefix}self_attn.{name}_proj.{suffix}"] = chunk
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} text-tower keys do not fit an open_clip text tower with "
            f"{config.layers} blocks of width {config.width}, e.g. {unknown[:5]}; "
            "check the checkpoint and the text encoder config (strip 'cond_stage_model.model.' first)"
        )
    missing_blocks = sorted(set(range(config.layers)) - seen_blocks)
    missing = sorted(set(expected) - set(converted))
    if missing or missing_blocks:
        raise CheckpointError(
            f"the text-tower checkpoint is incomplete: missing blocks {missing_blocks}, "
            f"missing parameters {missing[:5]}; the file was made for another text encoder config"
        )
    check_state_dict_fits(expected, converted, component="text tower")
    return converted


def load_open_clip_text_weights(encoder: OpenCLIPTextEncoder, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Convert bare open_clip text-tower weights and load them strictly into `encoder`."""
    encoder.transformer.load_state_dict(convert_open_clip_text_state_dict(state_dict, encoder.config), strict=True)
