"""The seam between the one training loop and what is being learned.

The loop (device placement, precision, accumulation, EMA, checkpoints, resume, logging) turns raw
video batches into a `TrainBatch` with the frozen VAE and text encoder, then calls an `Objective`.
An objective is an nn.Module holding the trainable network (and any frozen teacher), so that
accelerate/DDP wrap exactly one module; it returns the loss and a few numbers to log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class TrainBatch:
    latents: torch.Tensor  # (b, c, T, h, w), already multiplied by the VAE scaling factor
    context: torch.Tensor  # (b, L, d) text embedding of the captions
    uncond_context: torch.Tensor  # (b, L, d) embedding of the empty prompt (CFG / prompt dropout)
    fps: torch.Tensor  # (b,) int64 fps condition
    captions: list[str] = field(default_factory=list)


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the trainable parameters
    logs: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class: subclasses set `self.model` (the trainable network) and implement `forward`."""

    model: nn.Module

    def forward(self, batch: TrainBatch, generator: torch.Generator | None = None) -> ObjectiveOutput:
        raise NotImplementedError

    def trainable_module(self) -> nn.Module:
        """What the optimizer updates, EMA tracks and checkpoints save (never a frozen teacher)."""
        return self.model
