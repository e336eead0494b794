"""Entry points that speak the official code's argument names.

`build_unet_from_official` takes a `{"target": ..., "params": {...}}` entry as written in the
official yaml configs (and in shared/reference/golden/tiny_configs.json) and returns the
equivalent `UNet3D`, whose state dict uses the official names and whose forward takes the
official arguments `(x, timesteps, context=..., fps=..., timestep_cond=...)`.
"""

from __future__ import annotations

from typing import Any

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig

# Official U-Net classes (last two components of the target path) -> whether they run a middle block.
# The 0.7B file is the 0.9B file without the middle block; the teacher and 0.9B classes keep it.
_UNET_CLASSES = {
    "openaimodel3d.UNetModel": True,
    "openaimodel3d_t2v_jun_09B.UNetModel": True,
    "openaimodel3d_t2v_jun_07B.UNetModel": False,
}

# Constructor arguments without a default in the official signature.
_REQUIRED = ("in_channels", "out_channels", "model_channels", "num_res_blocks", "attention_resolutions")

# Official defaults of the arguments that map onto UNetConfig fields.
_MAPPED_DEFAULTS: dict[str, Any] = {
    "channel_mult": (1, 2, 4, 8),
    "dropout": 0.0,
    "context_dim": None,
    "num_head_channels": -1,
    "num_heads": -1,
    "transformer_depth": 1,
    "temporal_transformer_depth": 1,
    "fps_cond": False,
    "addition_attention": False,
    "time_cond_proj_dim": None,
}

# Structural switches this implementation supports at one value only:
# name -> (official default, the one supported value).
_FIXED_FLAGS: dict[str, tuple[Any, Any]] = {
    "dims": (2, 2),
    "conv_resample": (True, True),
    "use_scale_shift_norm": (False, False),
    "resblock_updown": (False, False),
    "use_linear": (False, True),
    "temporal_conv": (False, True),
    "tempspatial_aware": (False, False),
    "temporal_attention": (True, True),
    "temporal_selfatt_only": (True, True),
    "use_relative_position": (True, False),
    "use_causal_attention": (False, False),
    "use_image_attention": (False, False),
    "use_fp16": (False, False),
    "motion_cond_proj_dim": (None, None),
    "record_attn_probs": (False, False),
}

# Accepted and without effect on the network: gradient checkpointing (handled as the module switch)
# and the temporal length, which only matters with relative positions (unsupported above).
_NO_EFFECT = ("use_checkpoint", "temporal_length")


def unet_config_from_official(config: dict) -> UNetConfig:
    """Translate an official `{"target", "params"}` U-Net entry into a `UNetConfig`."""
    if not isinstance(config, dict) or "target" not in config:
        raise ConfigError('official U-Net config must be a dict with "target" and "params" keys')
    target = str(config["target"])
    class_key = ".".join(target.split(".")[-2:])
    if class_key not in _UNET_CLASSES:
        raise ConfigError(f"unsupported U-Net target {target!r}; supported classes end in {sorted(_UNET_CLASSES)}")
    params = dict(config.get("params") or {})

    unknown = sorted(set(params) - set(_REQUIRED) - set(_MAPPED_DEFAULTS) - set(_FIXED_FLAGS) - set(_NO_EFFECT))
    if unknown:
        raise ConfigError(f"unknown official U-Net argument(s) {unknown} for {target}")
    missing = [name for name in _REQUIRED if name not in params]
    if missing:
        raise ConfigError(f"official U-Net config lacks required argument(s) {missing}")

    for name, (default, supported) in _FIXED_FLAGS.items():
        value = params.get(name, default)
        if value != supported:
            where = "" if name in params else " (the official default, since the config omits it)"
            raise ConfigError(
                f"unsupported official U-Net flag {name}={value!r}{where}; this implementation needs "
                f"{name}={supported!r}"
            )

    p = {**_MAPPED_DEFAULTS, **params}
    if p["num_head_channels"] == -1:
        raise ConfigError(
            "unsupported official U-Net setting num_head_channels=-1 (a fixed head count via num_heads); "
            "give num_head_channels, the width of one attention head"
        )
    if p["context_dim"] is None:
        raise ConfigError("official U-Net config needs context_dim (the text-embedding width)")
    # num_heads is ignored by the official code whenever num_head_channels is set, as it is here.
    return UNetConfig(
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        model_channels=p["model_channels"],
        channel_mult=tuple(p["channel_mult"]),
        num_res_blocks=p["num_res_blocks"],
        attention_resolutions=tuple(p["attention_resolutions"]),
        num_head_channels=p["num_head_channels"],
        context_dim=p["context_dim"],
        use_middle_block=_UNET_CLASSES[class_key],
        time_cond_proj_dim=p["time_cond_proj_dim"],
        fps_cond=bool(p["fps_cond"]),
        default_fps=16,  # the official forward's default for `fps`
        dropout=float(p["dropout"]),
        transformer_depth=p["transformer_depth"],
        temporal_transformer_depth=p["temporal_transformer_depth"],
        use_init_attn=bool(p["addition_attention"]),
    )


def build_unet_from_official(config: dict) -> UNet3D:
    """Build the U-Net an official `{"target", "params"}` entry describes (default-initialised weights).

    Load official weights with `load_state_dict(state_dict, strict=True)`; names and shapes match.
    """
    model = UNet3D(unet_config_from_official(config))
    model.enable_gradient_checkpointing(bool(config.get("params", {}).get("use_checkpoint", False)))
    return model
