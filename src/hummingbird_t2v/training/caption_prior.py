"""Fit a `CaptionMeanPrior` to a model's data: least squares from caption tokens to clean latents.

The minimiser of E||prior(c) - z0||^2 is E[z0 | c], the caption's mean latent clip, which is what the
pipeline shifts its starting noise by (models/caption_prior.py says why). The U-Net, VAE and text
encoder stay frozen: the clips are encoded once, then the small prior trains on the cached pairs in
seconds, so a prior can be added to any trained model folder.

    hummingbird train prior --model MODEL_FOLDER --config configs/toy_teacher_core.yaml -o OUT
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.caption_prior import CaptionMeanPrior, CaptionPriorConfig
from hummingbird_t2v.training.data import ClipSource, ShardedBatches, batch_loader

__all__ = ["PriorFit", "encode_clips", "fit_caption_prior"]


@dataclass(frozen=True)
class PriorFit:
    """How well the prior predicts held-out clips, against the one mean latent of all training clips."""

    clips: int
    steps: int
    heldout_clips: int
    heldout_mse: float
    heldout_mse_of_dataset_mean: float
    seconds: float

    @property
    def explained(self) -> float:
        """Share of the held-out latents' variance around the dataset mean that the prior explains."""
        return 1.0 - self.heldout_mse / self.heldout_mse_of_dataset_mean

    def summary(self) -> str:
        return (
            f"caption prior: held-out MSE {self.heldout_mse:.4f} against {self.heldout_mse_of_dataset_mean:.4f} for the "
            f"dataset's mean latent ({self.explained:.1%} explained; {self.heldout_clips} held-out of {self.clips} clips, "
            f"{self.steps} steps, {self.seconds:.0f} s)"
        )


@torch.no_grad()
def encode_clips(
    vae: nn.Module,
    text_encoder: nn.Module,
    source: ClipSource,
    count: int,
    *,
    batch_size: int = 32,
    shuffle_seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` clips of `source` (shuffled; unusable clips replaced, as in training) as float32
    (caption tokens (n, L, d), posterior-mean scaled latents (n, c, T, h, w))."""
    if count < 2:
        raise ConfigError(f"fitting a caption prior needs at least 2 clips, got {count}")
    batches = ShardedBatches(source, batch_size, shuffle_seed=shuffle_seed)
    device = next(vae.parameters()).device
    contexts, latents = [], []
    seen = 0
    for batch in batch_loader(batches, 0):
        take = min(batch_size, count - seen)
        latents.append(vae.encode(batch["video"][:take].to(device, vae.dtype)).float().cpu())
        contexts.append(text_encoder.encode(batch["caption"][:take]).float().cpu())
        seen += take
        if progress is not None:
            progress(take)
        if seen >= count:
            break
    return torch.cat(contexts), torch.cat(latents)


def fit_caption_prior(
    contexts: torch.Tensor,
    latents: torch.Tensor,
    *,
    config: CaptionPriorConfig | None = None,
    steps: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    heldout_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[CaptionMeanPrior, PriorFit]:
    """Train a prior on (caption tokens, latents) pairs with AdamW and a cosine schedule; the first
    `heldout_fraction` of the pairs only measure it."""
    if contexts.shape[0] != latents.shape[0] or latents.ndim != 5 or contexts.ndim != 3:
        raise ConfigError(
            f"need tokens (n, L, d) and latents (n, c, T, h, w) of the same n, got {tuple(contexts.shape)} and {tuple(latents.shape)}"
        )
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch size must be at least 1, got {steps} and {batch_size}")
    heldout = round(heldout_fraction * contexts.shape[0])
    if not 1 <= heldout < contexts.shape[0]:
        raise ConfigError(f"a held-out fraction of {heldout_fraction} leaves no clips to train on or to measure with; use more clips")
    config = config or CaptionPriorConfig(
        context_dim=contexts.shape[-1], latent_channels=latents.shape[1], grid_frames=latents.shape[2]
    )
    size = tuple(latents.shape[2:])
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = CaptionMeanPrior(config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.1)
    train_contexts, train_latents = contexts[heldout:], latents[heldout:]
    for _ in range(steps):
        rows = torch.randint(train_contexts.shape[0], (batch_size,), generator=generator)
        loss = nn.functional.mse_loss(prior(train_contexts[rows], *size), train_latents[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    prior.eval()
    with torch.no_grad():
        error = nn.functional.mse_loss(prior(contexts[:heldout], *size), latents[:heldout]).item()
        dataset_mean = train_latents.mean(dim=0, keepdim=True).expand_as(latents[:heldout])
        baseline = nn.functional.mse_loss(dataset_mean, latents[:heldout]).item()
    fit = PriorFit(contexts.shape[0], steps, heldout, error, baseline, time.perf_counter() - started)
    return prior, fit
