"""The base (teacher) diffusion objective: eps-prediction MSE on VAE latents.

For each clip: t ~ U{0..N-1}; optionally VideoCrafter2's latent rescale z0 <- s(t)·z0 (s ramps
from 1.0 to `scale_b` over t < 400, the `use_scale` of VC2's configs); z_t = sqrt(ᾱ_t)·z0 +
sqrt(1-ᾱ_t)·ε; the caption embedding is replaced by the empty prompt's with probability
`prompt_dropout` so that one network learns both halves of classifier-free guidance; the loss is
mean((ε_θ(z_t, t, c, fps) - ε)²), optionally weighted per clip by Min-SNR-γ (Hang et al. 2023):
w(t) = min(SNR(t), γ) / SNR(t) with SNR = ᾱ/(1-ᾱ), which stops the many easy low-noise steps from
dominating the gradient, so the high-noise steps that decide layout, colour and motion learn
faster. Optional `snr_floor` raises the weight of the highest-noise steps instead: seen as a
loss on the predicted clean latent, the eps loss weighs each step by SNR(t) (min(SNR, γ) with
Min-SNR), which is 0.005 at t = 999, so the steps that alone decide where a trajectory starts and
which way it runs barely count; the floor keeps that clean-latent weight at least `snr_floor`
(1 is Salimans & Ho's truncated-SNR weighting); `timestep_range` draws t from a sub-range only.
Optional offset noise (Guttenberg 2023) adds to ε one Gaussian value per clip and channel, shared
by every frame and pixel (scaled by `offset_noise`): with the scaled-linear schedule the mean of a
noisy latent still reveals the clip's mean colour at t = 999 (the mean of 16x16x8
elements has a signal-to-noise ratio near 10 there), so a model can read the background colour
off the noise instead of the caption and then, sampling from fresh noise, paints a random one;
the offset makes that mean uninformative, so the caption has to supply it. Per frame the same
holds more strongly (a 16x16 frame's mean is far noisier than the clip's, yet still informative
at t = 999), and a model that reads each frame's colour off its own noise paints a different
background in every frame of a sampled video; `frame_offset_noise` adds one more Gaussian value
per clip, channel *and frame*, so that a frame's colour has to come from the caption and the
other frames (temporal attention) instead.

The ᾱ table is the one VC2's DDIM sampler reads (computed in float64, stored float32), and the
exported model samples with DDIM + CFG and the same `use_scale` switch, so training and sampling
agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.diffusion.schedule import (
    DEFAULT_BETA_END,
    DEFAULT_BETA_START,
    DEFAULT_NUM_TRAIN_TIMESTEPS,
    VC2_SCALE_B,
    scaled_linear_alphas_cumprod,
    vc2_latent_scale_table,
)
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
from hummingbird_t2v.training.objective import Objective, ObjectiveOutput, TrainBatch
from hummingbird_t2v.training.objectives import ObjectiveSpec, register_objective

__all__ = ["DiffusionObjective", "DiffusionSettings"]


@dataclass(frozen=True)
class DiffusionSettings:
    # Probability of training a sample on the empty prompt (needed for CFG at sampling time).
    prompt_dropout: float = 0.1
    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS
    beta_start: float = DEFAULT_BETA_START
    beta_end: float = DEFAULT_BETA_END
    # VideoCrafter2's latent rescale (use_scale): train on s(t)·z0; the export sets use_scale to match.
    latent_rescale: bool = False
    scale_b: float = VC2_SCALE_B
    # Min-SNR-γ loss weighting (5 is the paper's value); None: plain MSE, as VideoCrafter2 trains.
    min_snr_gamma: float | None = None
    # Lower bound on the clean-latent weight min(SNR, γ) (None: none): eps weight max(min(SNR, γ), floor)/SNR.
    snr_floor: float | None = None
    # Draw t from [low, high] only (None: every step): e.g. to spend a fine-tune on the noisiest steps.
    timestep_range: tuple[int, int] | None = None
    # Offset noise scale (0.1 is usual); 0: plain Gaussian noise, as VideoCrafter2 trains.
    offset_noise: float = 0.0
    # Offset noise drawn per frame as well (scale; 0: off): video latents (b, c, frames, h, w) only.
    frame_offset_noise: float = 0.0

    def __post_init__(self) -> None:
        if not self.offset_noise >= 0:
            raise ConfigError(f"objective.offset_noise must be >= 0 (0.1 is usual), got {self.offset_noise}")
        if not self.frame_offset_noise >= 0:
            raise ConfigError(f"objective.frame_offset_noise must be >= 0 (0.1 is usual), got {self.frame_offset_noise}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError(f"objective.min_snr_gamma must be > 0 (5 is usual) or null, got {self.min_snr_gamma}")
        if self.snr_floor is not None and not self.snr_floor > 0:
            raise ConfigError(f"objective.snr_floor must be > 0 (0.1 lifts t > 686 on the default schedule) or null, got {self.snr_floor}")
        if self.snr_floor is not None and self.min_snr_gamma is not None and self.snr_floor > self.min_snr_gamma:
            raise ConfigError(
                f"objective.snr_floor ({self.snr_floor}) must not exceed objective.min_snr_gamma ({self.min_snr_gamma})"
            )
        if self.timestep_range is not None:
            if len(self.timestep_range) != 2:
                raise ConfigError(f"objective.timestep_range is [low, high], got {self.timestep_range}")
            low, high = self.timestep_range
            if not 0 <= low <= high < self.num_train_timesteps:
                raise ConfigError(
                    f"objective.timestep_range must satisfy 0 <= low <= high < {self.num_train_timesteps}, got {list(self.timestep_range)}"
                )
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise ConfigError(f"objective.prompt_dropout must lie in [0, 1], got {self.prompt_dropout}")
        if not 0.0 < self.scale_b <= 1.0:
            raise ConfigError(f"objective.scale_b must lie in (0, 1], got {self.scale_b}")


class DiffusionObjective(Objective):
    def __init__(self, model: nn.Module, settings: DiffusionSettings | None = None) -> None:
        super().__init__()
        self.model = model
        self.settings = settings or DiffusionSettings()
        s = self.settings
        alphas_cumprod = scaled_linear_alphas_cumprod(
            s.num_train_timesteps,
            s.beta_start,
            s.beta_end,
            precision="float64_then_float32",
        )
        # Non-persistent: derived from the settings, so checkpoints hold only the network.
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        scale = vc2_latent_scale_table(s.num_train_timesteps, scale_b=s.scale_b) if s.latent_rescale else None
        self.register_buffer("latent_scale", scale, persistent=False)

    def forward(self, batch: TrainBatch, generator: torch.Generator | None = None) -> ObjectiveOutput:
        z0 = batch.latents.float()
        b = z0.shape[0]
        device = z0.device
        low, high = self.settings.timestep_range or (0, self.settings.num_train_timesteps - 1)
        t = torch.randint(low, high + 1, (b,), generator=generator, device=device)
        noise = torch.randn(z0.shape, generator=generator, device=device)
        drop = torch.rand(b, generator=generator, device=device) < self.settings.prompt_dropout
        if self.settings.offset_noise > 0:
            per_channel = (b, z0.shape[1]) + (1,) * (z0.ndim - 2)
            noise = noise + self.settings.offset_noise * torch.randn(per_channel, generator=generator, device=device)
        if self.settings.frame_offset_noise > 0:
            if z0.ndim != 5:
                raise ConfigError(
                    f"objective.frame_offset_noise needs video latents (b, c, frames, h, w), got shape {tuple(z0.shape)}; set it to 0"
                )
            per_frame = (b, z0.shape[1], z0.shape[2], 1, 1)
            noise = noise + self.settings.frame_offset_noise * torch.randn(per_frame, generator=generator, device=device)

        per_sample = (b,) + (1,) * (z0.ndim - 1)
        if self.latent_scale is not None:
            z0 = z0 * self.latent_scale[t].view(per_sample)
        alpha_bar = self.alphas_cumprod[t].view(per_sample)
        z_t = alpha_bar.sqrt() * z0 + (1.0 - alpha_bar).sqrt() * noise
        context = torch.where(drop.view(b, 1, 1), batch.uncond_context, batch.context)

        eps = self.model(z_t, t, context, fps=batch.fps)
        s = self.settings
        if s.min_snr_gamma is None and s.snr_floor is None:
            return ObjectiveOutput(loss=F.mse_loss(eps.float(), noise))
        per_clip = (eps.float() - noise).pow(2).flatten(1).mean(1)
        snr = self.alphas_cumprod[t] / (1.0 - self.alphas_cumprod[t])
        # The weight of the clean-latent error, then divided by SNR to weigh the eps error.
        clean_weight = snr.clamp(max=s.min_snr_gamma, min=s.snr_floor)
        return ObjectiveOutput(loss=(clean_weight / snr * per_clip).mean())

    def pipeline_config(self, defaults: SamplingDefaults) -> PipelineConfig:
        s = self.settings
        return PipelineConfig(
            sampler="ddim",
            defaults=defaults,
            num_train_timesteps=s.num_train_timesteps,
            beta_start=s.beta_start,
            beta_end=s.beta_end,
            use_scale=s.latent_rescale,
            scale_b=s.scale_b,
        )


def build_diffusion_objective(settings: DiffusionSettings, components) -> DiffusionObjective:
    config = getattr(components.unet, "config", None)
    if getattr(config, "time_cond_proj_dim", None):
        raise ConfigError(
            "the base diffusion objective trains a U-Net without a guidance projection; "
            "set model.unet.config.time_cond_proj_dim to null (or use a teacher preset such as vc2 / tiny-vc2)"
        )
    return DiffusionObjective(components.unet, settings)


register_objective(
    ObjectiveSpec(
        name="diffusion",
        command="base",
        settings_class=DiffusionSettings,
        build=build_diffusion_objective,
        description="train a base/teacher U-Net: eps-prediction MSE on VAE latents with prompt dropout for CFG",
    )
)
