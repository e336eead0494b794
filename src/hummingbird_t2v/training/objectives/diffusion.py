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
other frames (temporal attention) instead. `frame_pyramid_noise` carries the same idea from a
frame's mean to its coarse layout: per clip, channel and frame it adds Gaussian noise drawn at
1/2, 1/4, ... of the latent's height and width (down to 2x2), upsampled bilinearly, level i
scaled by `frame_pyramid_noise`**i (Whitaker's multi-resolution noise, 2023, drawn per frame).
Why: where an object sits in each frame, and so which way it moves, is still readable in a noisy
latent at t = 999 (the toy teacher's one-step x̂₀ of real clips noised there moved the clips' own
way in 27 of 32 whichever direction the caption named, and from pure noise in no consistent way),
so the model learns to read the direction off the noise, and sampling from fresh noise gives it a
random one; hiding each frame's coarse layout makes the caption and the frame's index the source.

Optional `pure_noise_x0_weight` trains the sampler's first step for what it is. A sampler starts
from pure noise at the highest timestep, a latent with no clip in it, while training at that
timestep always leaves √ᾱ ≈ 0.07 of the clip in (the schedule's terminal SNR is not zero: Lin et
al. 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed"), so a model can meet the
loss there by reading the clip instead of the caption. With the weight w > 0 the model also
predicts ε from fresh noise at t = T − 1 with the batch's (dropped-out) captions, and
w · mean((x̂₀ − z0)²) is added: the best it can do is the caption's mean clip, per frame, which is
what the first step should lay out (with the eps loss that step weighs the clean-latent error by
SNR = 0.005; this weighs it by w).

Optional reward feedback (`rewards`, the entries stage 2 takes) on a latent at high noise: the
model predicts ε there with the true caption, and each reward term scores the decoded one-step
clean prediction x̂₀ = (z_t − √(1−ᾱ_t)·ε)/√ᾱ_t, adding −weight·mean(score) to the loss (the
frozen VAE passes the gradient through). `reward_latents` picks the latent: "noised_data" noises
the batch's clips to a timestep drawn per clip from `reward_timestep_range` (default 800-999,
where a sampler lays out the clip); "sampled" runs the model's own DDIM + CFG sampler (no
gradient) from fresh noise up to one of its steps inside that range, drawn per batch, so that the
reward judges what sampling does, and the caption is the only place the asked property can come
from. Why: a property the eps loss weighs by SNR (0.005 at t = 999), such as which way the toy
world's object moves, is decided at exactly those steps, and a reward can ask for it there
directly (docs/toy-model.md, "A fourth try").

The ᾱ table is the one VC2's DDIM sampler reads (computed in float64, stored float32), and the
exported model samples with DDIM + CFG and the same `use_scale` switch, so training and sampling
agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.diffusion.consistency import predicted_original_sample
from hummingbird_t2v.diffusion.ddim import ddim_timesteps, sample_ddim_cfg
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
from hummingbird_t2v.training.objectives.reward_terms import (
    RewardFeedback,
    RewardSpec,
    RewardTerm,
    build_reward_terms,
)

__all__ = ["DiffusionObjective", "DiffusionSettings", "frame_pyramid_noise"]


def frame_pyramid_noise(
    shape: torch.Size | tuple[int, ...],
    discount: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Noise of `shape` (b, c, frames, h, w) made of Gaussian fields drawn per frame at 1/2, 1/4, ...
    of (h, w), down to 2x2, each upsampled bilinearly to (h, w) and level i scaled by discount**i."""
    if len(shape) != 5:
        raise ConfigError(
            f"objective.frame_pyramid_noise needs video latents (b, c, frames, h, w), got shape {tuple(shape)}; set it to 0"
        )
    b, c, frames, height, width = shape
    total = torch.zeros(shape, device=device)
    level = 1
    while min(height, width) >> level >= 2:
        coarse = torch.randn((b * frames, c, height >> level, width >> level), generator=generator, device=device)
        field = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        total += discount**level * field.view(b, frames, c, height, width).transpose(1, 2)
        level += 1
    return total


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
    # Multi-resolution noise per frame (level i at 1/2**i of the size, scaled by this**i; 0: off).
    frame_pyramid_noise: float = 0.0
    # Weight of the clean-latent error of a prediction from pure noise at t = T - 1 (0: off).
    pure_noise_x0_weight: float = 0.0
    # Reward terms scored on x̂₀ at high noise (the same entries as stage 2's `objective.rewards`).
    rewards: tuple[RewardSpec, ...] = ()
    # The timesteps [low, high] the rewards' x̂₀ is predicted at.
    reward_timestep_range: tuple[int, int] = (800, 999)
    # Which latents the rewards' x̂₀ comes from: the batch's clips noised ("noised_data") or the
    # model's own sampler stopped inside reward_timestep_range ("sampled", settings below).
    reward_latents: Literal["noised_data", "sampled"] = "noised_data"
    reward_sampler_steps: int = 25
    reward_guidance_scale: float = 3.0
    reward_eta: float = 1.0

    def __post_init__(self) -> None:
        if not self.offset_noise >= 0:
            raise ConfigError(f"objective.offset_noise must be >= 0 (0.1 is usual), got {self.offset_noise}")
        if not self.frame_offset_noise >= 0:
            raise ConfigError(f"objective.frame_offset_noise must be >= 0 (0.1 is usual), got {self.frame_offset_noise}")
        if not 0 <= self.frame_pyramid_noise < 1:
            raise ConfigError(f"objective.frame_pyramid_noise must lie in [0, 1) (0.5-0.8 is usual), got {self.frame_pyramid_noise}")
        if not self.pure_noise_x0_weight >= 0:
            raise ConfigError(f"objective.pure_noise_x0_weight must be >= 0 (0.01 is about the eps loss's size), got {self.pure_noise_x0_weight}")
        if self.min_snr_gamma is not None and not self.min_snr_gamma > 0:
            raise ConfigError(f"objective.min_snr_gamma must be > 0 (5 is usual) or null, got {self.min_snr_gamma}")
        if self.snr_floor is not None and not self.snr_floor > 0:
            raise ConfigError(f"objective.snr_floor must be > 0 (0.1 lifts t > 686 on the default schedule) or null, got {self.snr_floor}")
        if self.snr_floor is not None and self.min_snr_gamma is not None and self.snr_floor > self.min_snr_gamma:
            raise ConfigError(
                f"objective.snr_floor ({self.snr_floor}) must not exceed objective.min_snr_gamma ({self.min_snr_gamma})"
            )
        for name in ("timestep_range", "reward_timestep_range"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 2:
                raise ConfigError(f"objective.{name} is [low, high], got {value}")
            low, high = value
            if not 0 <= low <= high < self.num_train_timesteps:
                raise ConfigError(
                    f"objective.{name} must satisfy 0 <= low <= high < {self.num_train_timesteps}, got {list(value)}"
                )
        if self.reward_latents not in ("noised_data", "sampled"):
            raise ConfigError(f"objective.reward_latents must be 'noised_data' or 'sampled', got {self.reward_latents!r}")
        if self.reward_latents == "sampled" and not self.reward_sampler_steps_in_range():
            raise ConfigError(
                f"no step of the {self.reward_sampler_steps}-step DDIM schedule lies in objective.reward_timestep_range "
                f"{list(self.reward_timestep_range)}; widen the range or change objective.reward_sampler_steps"
            )
        if not 0.0 <= self.prompt_dropout <= 1.0:
            raise ConfigError(f"objective.prompt_dropout must lie in [0, 1], got {self.prompt_dropout}")
        if not 0.0 < self.scale_b <= 1.0:
            raise ConfigError(f"objective.scale_b must lie in (0, 1], got {self.scale_b}")


    def reward_sampler_steps_in_range(self) -> list[int]:
        """Indices of the reward sampler's steps whose timestep lies in `reward_timestep_range`."""
        if self.reward_sampler_steps < 1:
            raise ConfigError(f"objective.reward_sampler_steps must be >= 1, got {self.reward_sampler_steps}")
        low, high = self.reward_timestep_range
        steps = ddim_timesteps(self.reward_sampler_steps, self.num_train_timesteps).tolist()
        return [i for i, t in enumerate(steps) if low <= t <= high]


class DiffusionObjective(Objective):
    """``rewards`` are built reward terms (``settings.rewards`` holds only their config entries) and
    need the frozen ``vae``, which decodes x̂₀ for them."""

    def __init__(
        self,
        model: nn.Module,
        settings: DiffusionSettings | None = None,
        rewards: list[RewardTerm] | tuple[RewardTerm, ...] = (),
        vae: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.settings = settings or DiffusionSettings()
        s = self.settings
        self.reward_feedback = RewardFeedback(rewards, vae) if rewards else None
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
        if self.settings.frame_pyramid_noise > 0:
            noise = noise + frame_pyramid_noise(z0.shape, self.settings.frame_pyramid_noise, generator=generator, device=device)

        z_t = self._noised(z0, t, noise)
        context = torch.where(drop.view(b, 1, 1), batch.uncond_context, batch.context)

        eps = self.model(z_t, t, context, fps=batch.fps)
        s = self.settings
        if s.min_snr_gamma is None and s.snr_floor is None:
            loss = F.mse_loss(eps.float(), noise)
        else:
            per_clip = (eps.float() - noise).pow(2).flatten(1).mean(1)
            snr = self.alphas_cumprod[t] / (1.0 - self.alphas_cumprod[t])
            # The weight of the clean-latent error, then divided by SNR to weigh the eps error.
            clean_weight = snr.clamp(max=s.min_snr_gamma, min=s.snr_floor)
            loss = (clean_weight / snr * per_clip).mean()
        logs: dict[str, Any] = {}
        extra = torch.zeros((), device=device)
        if s.pure_noise_x0_weight > 0:
            first_step = self._pure_noise_x0_error(z0, context, batch.fps, generator)
            extra = extra + s.pure_noise_x0_weight * first_step
            logs["loss_pure_noise_x0"] = first_step.detach()
        if self.reward_feedback is not None:
            reward_loss, reward_logs = self._reward_loss(self.reward_feedback, batch, generator)
            extra = extra + reward_loss
            logs.update(reward_logs)
        if not logs:
            return ObjectiveOutput(loss=loss)
        return ObjectiveOutput(loss=loss + extra, logs={"loss_eps": loss.detach(), **logs})

    def _pure_noise_x0_error(
        self, z0: torch.Tensor, context: torch.Tensor, fps: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """mean((x̂₀ − z0)²) of the prediction at t = T − 1 from fresh noise that holds no clip."""
        b = z0.shape[0]
        t = torch.full((b,), self.settings.num_train_timesteps - 1, device=z0.device)
        pure_noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        eps = self.model(pure_noise, t, context, fps=fps).float()
        x0 = predicted_original_sample(pure_noise, eps, self.alphas_cumprod[t])
        target = z0 * self.latent_scale[t].view(-1, *([1] * (z0.ndim - 1))) if self.latent_scale is not None else z0
        return F.mse_loss(x0, target)

    def _reward_loss(
        self, feedback: RewardFeedback, batch: TrainBatch, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reward terms on the one-step x̂₀ of a high-noise latent (see `reward_latents`), captioned truly."""
        if self.settings.reward_latents == "sampled":
            z_t, t = self._sampled_latents(batch, generator)
        else:
            z_t, t = self._noised_latents(batch, generator)
        eps = self.model(z_t, t, batch.context, fps=batch.fps).float()
        x0 = predicted_original_sample(z_t, eps, self.alphas_cumprod[t])
        if self.latent_scale is not None:  # back to the latents the VAE decodes, as the sampler's x̂₀
            x0 = x0 / self.latent_scale[t].view(-1, *([1] * (x0.ndim - 1)))
        return feedback(x0, batch.captions, generator)

    def _noised(self, z0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = √ᾱ_t·z0' + √(1−ᾱ_t)·noise per clip, with z0' = s(t)·z0 under the latent rescale."""
        per_sample = (t.shape[0],) + (1,) * (z0.ndim - 1)
        if self.latent_scale is not None:
            z0 = z0 * self.latent_scale[t].view(per_sample)
        alpha_bar = self.alphas_cumprod[t].view(per_sample)
        return alpha_bar.sqrt() * z0 + (1.0 - alpha_bar).sqrt() * noise

    def _noised_latents(self, batch: TrainBatch, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        z0 = batch.latents.float()
        b = z0.shape[0]
        low, high = self.settings.reward_timestep_range
        t = torch.randint(low, high + 1, (b,), generator=generator, device=z0.device)
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        return self._noised(z0, t, noise), t

    def _sampled_latents(self, batch: TrainBatch, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's own DDIM + CFG sample from fresh noise, stopped at a step drawn from those in range."""
        s = self.settings
        device = batch.latents.device
        candidates = s.reward_sampler_steps_in_range()
        step = candidates[int(torch.randint(len(candidates), (1,), generator=generator, device=device))]
        x_T = torch.randn(batch.latents.shape, generator=generator, device=device)
        training = self.model.training
        self.model.eval()  # sample as inference does (no dropout); the graded pass afterwards trains as usual
        try:
            with torch.no_grad():
                z_t = sample_ddim_cfg(
                    self.model,
                    x_T,
                    {"context": batch.context, "fps": batch.fps},
                    {"context": batch.uncond_context},
                    num_steps=s.reward_sampler_steps,
                    eta=s.reward_eta,
                    guidance_scale=s.reward_guidance_scale,
                    use_scale=s.latent_rescale,
                    scale_b=s.scale_b,
                    alphas_cumprod=self.alphas_cumprod,
                    generator=generator,
                    stop_before_step=step,
                )
        finally:
            self.model.train(training)
        t_value = int(ddim_timesteps(s.reward_sampler_steps, s.num_train_timesteps)[step])
        return z_t.float(), torch.full((x_T.shape[0],), t_value, dtype=torch.long, device=device)

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
    rewards = build_reward_terms(settings.rewards)
    return DiffusionObjective(components.unet, settings, rewards=rewards, vae=components.vae if rewards else None)


register_objective(
    ObjectiveSpec(
        name="diffusion",
        command="base",
        settings_class=DiffusionSettings,
        build=build_diffusion_objective,
        description="train a base/teacher U-Net: eps-prediction MSE on VAE latents with prompt dropout for CFG "
        "(optionally with reward feedback on the high-noise x̂₀, objective.rewards)",
    )
)
