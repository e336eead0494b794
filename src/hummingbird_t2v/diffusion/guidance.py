"""Distilled-guidance conditioning: the Fourier embedding of the guidance scale w.

The Hummingbird students take no classifier-free guidance at inference; instead the scale w is
embedded and fed to the U-Net as ``timestep_cond`` (projected by ``time_cond_proj``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError

# What the official inference scripts use (guidance not given on the command line).
DISTILLED_GUIDANCE_SCALE = 7.5
GUIDANCE_EMBEDDING_DIM = 256


def guidance_scale_embedding(w: Tensor, dim: int = GUIDANCE_EMBEDDING_DIM) -> Tensor:
    """Embed guidance scales ``w`` (b,) as float32 (b, dim): ``[sin(1000w·f), cos(1000w·f)]``.

    ``f_i = exp(−ln(10⁴)·i/(dim/2 − 1))``. Note sin first and ``dim/2 − 1`` in the denominator,
    the opposite of the timestep sinusoid. The arguments reach 15 000 rad, so the last bits
    depend on op order; this follows the official float32 order exactly (``w·1000`` in w's
    dtype, then float32; the frequency exponent as ``i · (−ln(10⁴)/(half−1))``): bitwise equal to
    the stored goldens on the CPU they were made on, within 1e-3 on others, whose vectorised exp
    and sin can differ in the last bit (an ulp of a 15 000-rad argument is 1e-3).
    """
    if w.ndim != 1:
        raise ConfigError(f"w must be a 1-D tensor of per-sample guidance scales, got shape {tuple(w.shape)}")
    if dim < 4 or dim % 2:
        raise ConfigError(f"the guidance embedding dim must be even and at least 4, got {dim}")
    half = dim // 2
    scaled_w = (w * 1000.0).to(torch.float32)
    log_step = torch.log(torch.tensor(10000.0, device=w.device)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=w.device) * -log_step)
    angles = scaled_w[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def guidance_embedding_for(
    scale: float, batch_size: int, *, dim: int = GUIDANCE_EMBEDDING_DIM, device: torch.device | str | None = None
) -> Tensor:
    """The (batch_size, dim) embedding of one guidance scale for every sample, as the pipeline uses it."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not math.isfinite(scale):
        raise ConfigError(f"the guidance scale must be a finite number, got {scale}")
    w = torch.full((batch_size,), float(scale), dtype=torch.float32, device=device)
    return guidance_scale_embedding(w, dim)
