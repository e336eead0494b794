"""`CaptionMeanPrior`: a caption's mean latent clip, E[z0 | caption], to start sampling from.

Why a sampler needs it: with the scaled-linear schedule of Stable Diffusion and VideoCrafter2 the
terminal SNR is not zero (sqrt(alpha_bar) = 0.068 at t = 999, 0.085 at DDIM's first step t = 961),
so during training the noisy latent at the first sampling timestep still holds a faint copy of the
clip, and a denoiser learns to read the clip's coarse layout off it (Lin et al. 2024, "Common
diffusion noise schedules and sample steps are flawed"). Sampling starts from pure noise, whose
layout is random. The exact first moment of the training marginal is
E[z_T | c] = sqrt(alpha_bar_T) * E[z0 | c]; this module estimates E[z0 | c], so the pipeline can
start from N(sqrt(alpha_bar_T) * prior(c), (1 - alpha_bar_T) I) instead of N(0, I). For the toy
model it is what carries the direction of motion (docs/toy-model.md): the mean clip of "moving
right" has the object's mass left of centre in the first frame and right of it in the last.

The mean of many clips is smooth, so the prior predicts a coarse grid (`grid_frames` x `grid_height`
x `grid_width`) that is resized to the latent's size: one attention-pooled summary of the caption
tokens, an MLP, and a trilinear resize. It has no access to the noise, so it cannot hurt diversity
beyond shifting the starting mean.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError

__all__ = ["CaptionMeanPrior", "CaptionPriorConfig"]


@dataclass(frozen=True)
class CaptionPriorConfig:
    context_dim: int = 128  # the text encoder's token width (1024 for OpenCLIP ViT-H/14)
    hidden_dim: int = 256
    latent_channels: int = 4
    grid_frames: int = 8
    grid_height: int = 8
    grid_width: int = 8

    def __post_init__(self) -> None:
        small = [f.name for f in fields(self) if getattr(self, f.name) < 1]
        if small:
            raise ConfigError(f"CaptionPriorConfig fields {small} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaptionPriorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown CaptionPriorConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)


class CaptionMeanPrior(nn.Module):
    """Text-encoder tokens (b, L, context_dim) -> the caption's mean scaled latent (b, c, T, h, w)."""

    def __init__(self, config: CaptionPriorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CaptionPriorConfig()
        self.norm = nn.LayerNorm(config.context_dim)
        # One learned query pools the tokens, the way the U-Net's cross-attention reads them; padding
        # positions get whatever weight training gives them, so any text encoder's output fits.
        self.query = nn.Parameter(torch.randn(config.context_dim) / math.sqrt(config.context_dim))
        grid = config.latent_channels * config.grid_frames * config.grid_height * config.grid_width
        self.mlp = nn.Sequential(
            nn.Linear(config.context_dim, config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, config.hidden_dim),
            nn.GELU(),
            nn.Linear(config.hidden_dim, grid),
        )

    def forward(self, context: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        config = self.config
        if context.ndim != 3 or context.shape[-1] != config.context_dim:
            raise ConfigError(
                f"the caption prior reads text tokens of shape (b, L, {config.context_dim}), got {tuple(context.shape)}; "
                "it was trained with another text encoder"
            )
        tokens = self.norm(context)
        weights = torch.softmax(tokens @ self.query / math.sqrt(config.context_dim), dim=1)
        pooled = (weights.unsqueeze(-1) * tokens).sum(dim=1)
        grid = self.mlp(pooled).view(-1, config.latent_channels, config.grid_frames, config.grid_height, config.grid_width)
        return nn.functional.interpolate(grid, size=(num_frames, height, width), mode="trilinear", align_corners=False)
