"""What a U-Net state dict says about its structure, and clear errors when it does not fit a model.

All functions accept a state dict of tensors or, for tests and manifests, a mapping of name -> shape.
Block layout read from the names (architecture spec (a)/(b)): ``input_blocks.0`` is the input conv;
then per level ``num_res_blocks`` entries ``[ResBlock, SpatialTransformer?, TemporalTransformer?]``
followed by a ``Downsample`` entry (``*.0.op``) between levels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.unet_config import UNET_PRESETS, UNetConfig

ShapeMap = Mapping[str, Any]  # name -> tensor, torch.Size or sequence of ints

_DEFAULT_HEAD_CHANNELS = 64
_SHOW_FIRST = 5
_SHOW_MISMATCHES = 3  # each one prints two shapes
_BLOCK_INDEX = re.compile(r"^input_blocks\.(\d+)\.")


def infer_unet_config(unet_state_dict: ShapeMap, num_head_channels: int | None = None) -> UNetConfig:
    """Rebuild the ``UNetConfig`` of a bare-named U-Net state dict from its names and shapes.

    ``num_head_channels`` only changes tensor shapes through ``init_attn`` (8 heads of that width), so
    it is read from there; without ``init_attn`` it defaults to 64 when every attention width divides
    by 64, otherwise it must be given. Raises ``CheckpointError`` for a dict that is not such a U-Net.
    """
    shapes = _shapes(unet_state_dict)
    conv_in = _require(shapes, "input_blocks.0.0.weight", rank=4)
    conv_out = _require(shapes, "out.2.weight", rank=4)
    model_channels, in_channels = conv_in[0], conv_in[1]

    levels = _encoder_levels(shapes)
    num_res_blocks = len(levels[0])
    if any(len(level) != num_res_blocks for level in levels):
        counts = [len(level) for level in levels]
        raise CheckpointError(
            f"U-Net levels have different numbers of ResBlocks {counts}; this layout is not supported"
        )
    channel_mult = []
    attention_levels = []
    for index, level in enumerate(levels):
        widths = {width for width, _ in level}
        attention = {has_attention for _, has_attention in level}
        if len(widths) != 1 or len(attention) != 1 or next(iter(widths)) % model_channels:
            raise CheckpointError(
                f"U-Net level {index} mixes widths or attention {level}; this layout is not supported"
            )
        channel_mult.append(next(iter(widths)) // model_channels)
        if attention.pop():
            attention_levels.append(index)

    spatial = _first_transformer_prefix(shapes, transformer_slot=1)
    temporal = _first_transformer_prefix(shapes, transformer_slot=2)
    init_attn_width = shapes.get("init_attn.0.proj_in.weight", (None,))[0]
    fields: dict[str, Any] = dict(
        in_channels=in_channels,
        out_channels=conv_out[0],
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(2**level for level in sorted(attention_levels, reverse=True)),
        use_middle_block=any(name.startswith("middle_block.") for name in shapes),
        time_cond_proj_dim=shapes["time_cond_proj.weight"][1] if "time_cond_proj.weight" in shapes else None,
        fps_cond=any(name.startswith("fps_embedding.") for name in shapes),
        frame_position_embedding=any(name.startswith("frame_embedding.") for name in shapes),
        frame_caption_embedding=any(name.startswith("frame_caption_embedding.") for name in shapes),
        spatiotemporal_conv=any(".spatiotemporal_conv." in name for name in shapes),
        use_init_attn=init_attn_width is not None,
    )
    if spatial is not None:
        fields["context_dim"] = _require(shapes, f"{spatial}transformer_blocks.0.attn2.to_k.weight", rank=2)[1]
        fields["transformer_depth"] = _count_transformer_blocks(shapes, spatial)
    if temporal is not None:
        fields["temporal_transformer_depth"] = _count_transformer_blocks(shapes, temporal)
    attention_widths = [model_channels * channel_mult[level] for level in attention_levels]
    fields["num_head_channels"] = _head_channels(init_attn_width, attention_widths, num_head_channels)
    try:
        return UNetConfig(**fields)
    except ConfigError as error:
        raise CheckpointError(f"the U-Net weights describe an invalid model: {error}") from None


def expected_unet_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``UNet3D(config).state_dict()``, built on the meta device (no memory, ~0.1 s)."""
    return dict(_expected_unet_shapes_cached(config))


@lru_cache(maxsize=16)
def _expected_unet_shapes_cached(config: UNetConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from hummingbird_t2v.models.unet import UNet3D

    with torch.device("meta"):
        model = UNet3D(config)
    return tuple((name, tuple(tensor.shape)) for name, tensor in model.state_dict().items())


def match_unet_preset(unet_state_dict: ShapeMap) -> str | None:
    """Name of the ``UNET_PRESETS`` entry whose state dict has exactly these names and shapes, else None."""
    shapes = _shapes(unet_state_dict)
    for name, config in UNET_PRESETS.items():
        expected = _expected_unet_shapes_cached(config)
        if len(expected) == len(shapes) and dict(expected) == shapes:
            return name
    return None


def check_state_dict_fits(
    module_or_expected_shapes: nn.Module | ShapeMap, state_dict: ShapeMap, *, component: str = "model"
) -> None:
    """Raise ``CheckpointError`` unless ``state_dict`` has exactly the expected names and shapes.

    The one-line message counts and names the first missing keys, unexpected keys and shape
    mismatches, and for a U-Net says which preset (or which structure) the file holds instead.
    """
    if isinstance(module_or_expected_shapes, nn.Module):
        expected = _shapes(module_or_expected_shapes.state_dict())
    else:
        expected = _shapes(module_or_expected_shapes)
    given = _shapes(state_dict)
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    mismatched = [name for name in expected if name in given and expected[name] != given[name]]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) ({_first(unexpected)})")
    if mismatched:
        shown = ", ".join(
            f"{name}: file {_fmt(given[name])} vs model {_fmt(expected[name])}"
            for name in mismatched[:_SHOW_MISMATCHES]
        )
        more = ", ..." if len(mismatched) > _SHOW_MISMATCHES else ""
        problems.append(f"{len(mismatched)} shape mismatch(es) ({shown}{more})")
    message = f"the weights do not fit the {component}: " + "; ".join(problems)
    hint = _describe_unet(given)
    raise CheckpointError(message + (f"; {hint}" if hint else ""))


def _describe_unet(shapes: dict[str, tuple[int, ...]]) -> str:
    if "input_blocks.0.0.weight" not in shapes:
        return ""
    preset = match_unet_preset(shapes)
    if preset is not None:
        return f"the file holds the '{preset}' U-Net, choose that model"
    try:
        config = infer_unet_config(shapes)
    except CheckpointError:
        return ""
    return (
        "the file holds a U-Net with "
        f"model_channels={config.model_channels}, channel_mult={list(config.channel_mult)}, "
        f"num_res_blocks={config.num_res_blocks}, middle block {'on' if config.use_middle_block else 'off'}, "
        f"time_cond_proj_dim={config.time_cond_proj_dim}"
    )


def _shapes(mapping: ShapeMap) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, value in mapping.items():
        shape = value.shape if hasattr(value, "shape") else value
        if not isinstance(shape, Sequence):
            raise CheckpointError(f"entry {name!r} is neither a tensor nor a shape")
        shapes[str(name)] = tuple(int(size) for size in shape)
    return shapes


def _require(shapes: dict[str, tuple[int, ...]], name: str, rank: int) -> tuple[int, ...]:
    shape = shapes.get(name)
    if shape is None:
        raise CheckpointError(
            f"not a 3D U-Net state dict (no '{name}'); pass U-Net weights with official (VideoCrafter2) key names"
        )
    if len(shape) != rank:
        raise CheckpointError(f"'{name}' has shape {_fmt(shape)}, a {rank}-d tensor was expected")
    return shape


def _encoder_levels(shapes: dict[str, tuple[int, ...]]) -> list[list[tuple[int, bool]]]:
    """Per level, (output width, has attention) of each encoder ResBlock unit."""
    indices = sorted({int(match.group(1)) for name in shapes if (match := _BLOCK_INDEX.match(name))})
    if indices != list(range(len(indices))):
        raise CheckpointError(f"input_blocks indices are not contiguous ({indices[:12]}...); the file is incomplete")
    levels: list[list[tuple[int, bool]]] = [[]]
    for index in indices[1:]:
        prefix = f"input_blocks.{index}."
        if f"{prefix}0.op.weight" in shapes:
            levels.append([])
            continue
        resblock_conv = shapes.get(f"{prefix}0.in_layers.2.weight")
        if resblock_conv is None:
            raise CheckpointError(f"input_blocks.{index} is neither a ResBlock nor a Downsample; not a supported U-Net")
        has_attention = f"{prefix}1.norm.weight" in shapes
        levels[-1].append((resblock_conv[0], has_attention))
    if not levels[0] or any(not level for level in levels):
        raise CheckpointError("a U-Net level without ResBlocks; the file is incomplete or not a supported U-Net")
    return levels


def _first_transformer_prefix(shapes: dict[str, tuple[int, ...]], transformer_slot: int) -> str | None:
    # Encoder units are [ResBlock, SpatialTransformer, TemporalTransformer]: slot 1 spatial, slot 2 temporal.
    for name in shapes:
        match = _BLOCK_INDEX.match(name)
        if match and name.startswith(f"input_blocks.{match.group(1)}.{transformer_slot}.transformer_blocks."):
            return f"input_blocks.{match.group(1)}.{transformer_slot}."
    return None


def _count_transformer_blocks(shapes: dict[str, tuple[int, ...]], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"transformer_blocks\.(\d+)\.")
    return len({match.group(1) for name in shapes if (match := pattern.match(name))})


def _head_channels(init_attn_width: int | None, attention_widths: list[int], requested: int | None) -> int:
    heads = UNetConfig.init_attn_heads  # fixed head count of init_attn in the official code
    if init_attn_width is not None:
        if init_attn_width % heads:
            raise CheckpointError(f"init_attn is {init_attn_width} wide, not a multiple of its {heads} heads")
        inferred = init_attn_width // heads
        if requested is not None and requested != inferred:
            raise CheckpointError(
                f"num_head_channels={requested} does not fit the weights: init_attn is {init_attn_width} wide "
                f"({heads} heads of {inferred}); pass num_head_channels={inferred} or leave it unset"
            )
        return inferred
    if requested is not None:
        return requested
    if all(width % _DEFAULT_HEAD_CHANNELS == 0 for width in attention_widths):
        return _DEFAULT_HEAD_CHANNELS
    raise CheckpointError(
        f"cannot tell the attention head width from these weights (attention widths {attention_widths} "
        f"do not divide by {_DEFAULT_HEAD_CHANNELS}); pass num_head_channels explicitly"
    )


def _first(names: list[str]) -> str:
    return ", ".join(names[:_SHOW_FIRST]) + (", ..." if len(names) > _SHOW_FIRST else "")


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ")"
