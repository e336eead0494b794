"""Split a full LatentDiffusion state dict into U-Net, VAE and text-encoder state dicts.

Official layout (VideoCrafter2 ``model.ckpt`` and the Hummingbird release alike):
``model.diffusion_model.*`` U-Net, ``first_stage_model.*`` VAE, ``cond_stage_model.model.*`` the
open_clip text tower, plus the diffusion schedule buffers at the top level, which we recompute and
therefore drop. Files holding a single component with bare names are routed by their first name part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

# (prefix, component), tried in order; the prefix is stripped from routed keys.
_PREFIXED_ROUTES = (
    ("model.diffusion_model.", "unet"),
    ("diffusion_model.", "unet"),  # DiffusionWrapper.state_dict(), i.e. ldm.model saved on its own
    ("first_stage_model.", "vae"),
    ("cond_stage_model.model.", "text_encoder"),
)

# First name part of bare component keys (a file that holds only one component, without prefix).
_BARE_UNET_ROOTS = frozenset(
    {
        "time_embed",
        "fps_embedding",
        "time_cond_proj",
        "frame_embedding",
        "input_blocks",
        "init_attn",
        "middle_block",
        "output_blocks",
        "out",
    }
)
_BARE_VAE_ROOTS = frozenset({"encoder", "decoder", "quant_conv", "post_quant_conv"})
_BARE_TEXT_ROOTS = frozenset(
    {"token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "logit_scale"}
)

# Text-tower entries that are not weights of the tower we build: the causal mask (a persistent buffer
# in some open_clip versions) and a vision tower some exports keep.
_TEXT_NON_WEIGHTS = ("attn_mask",)
_TEXT_DROPPED_PREFIXES = ("visual.",)

# LatentDiffusion schedule buffers (recomputed by hummingbird_t2v.diffusion) and loss weights: dropped on
# purpose. Other unrouted keys are dropped too but reported by ComponentStateDicts.unrecognised.
LDM_SCHEDULE_KEYS = frozenset(
    {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "scale_arr",
        "logvar",
        "lvlb_weights",
    }
)


@dataclass
class ComponentStateDicts:
    """Per-component state dicts with bare (module-relative) names; any of them may be empty."""

    unet: dict[str, torch.Tensor] = field(default_factory=dict)
    vae: dict[str, torch.Tensor] = field(default_factory=dict)
    text_encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # original names of entries that went nowhere

    @property
    def unrecognised(self) -> list[str]:
        """Ignored keys that are not known LatentDiffusion leftovers (schedule, EMA copy, text mask)."""
        return [key for key in self.ignored if not _is_known_leftover(key)]


def split_components(
    state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None = torch.float32
) -> ComponentStateDicts:
    """Route ``state_dict`` entries to U-Net / VAE / text encoder, strip prefixes, cast floats to ``dtype``.

    ``dtype=None`` keeps the stored dtypes. Integer tensors are never cast.
    """
    result = ComponentStateDicts()
    for key, tensor in state_dict.items():
        component, name = _route(key)
        if component is None:
            result.ignored.append(key)
            continue
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        getattr(result, component)[name] = tensor
    return result


def _route(key: str) -> tuple[str | None, str]:
    for prefix, component in _PREFIXED_ROUTES:
        if key.startswith(prefix):
            name = key[len(prefix) :]
            if component == "text_encoder" and not _is_text_weight(name):
                return None, key
            return component, name
    root = key.split(".", 1)[0]
    if root in _BARE_UNET_ROOTS:
        return "unet", key
    if root in _BARE_VAE_ROOTS:
        return "vae", key
    if root in _BARE_TEXT_ROOTS and _is_text_weight(key):
        return "text_encoder", key
    return None, key


def _is_known_leftover(key: str) -> bool:
    if key in LDM_SCHEDULE_KEYS or key.startswith("model_ema."):
        return True
    text_name = key.removeprefix("cond_stage_model.model.")
    return text_name != key and not _is_text_weight(text_name)


def _is_text_weight(name: str) -> bool:
    return name not in _TEXT_NON_WEIGHTS and not name.startswith(_TEXT_DROPPED_PREFIXES)
