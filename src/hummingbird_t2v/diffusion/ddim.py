"""DDIM with classifier-free guidance, exactly as VideoCrafter2 (the teacher) samples.

Quirks kept on purpose, because the teacher was trained and evaluated with them:
* timesteps are "uniform + 1" (50 steps: 981, 961, …, 1; never 999);
* the last step moves to ᾱ[0] = 0.99915, not to a clean sample (ᾱ = 1), and the sampler
  returns that step's x_prev, not its x̂₀;
* with ``use_scale`` x̂₀ is divided by s(t) and s(t_prev) is re-applied (see ``schedule.py``);
* CFG in the classic form ε_u + w·(ε_c − ε_u), two separate passes, conditional first;
* no clipping or thresholding of x̂₀;
* σ is computed in float64 from the float32 ᾱ and rounded to float32 when used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .denoiser import Denoiser, call_denoiser
from .numerics import draw_noise, update_dtype
from .schedule import VC2_SCALE_B, check_alphas_cumprod, scaled_linear_alphas_cumprod, vc2_latent_scale_table

# VideoCrafter2 inference defaults (scripts/run_text2video.sh).
VC2_DDIM_STEPS = 50
VC2_DDIM_ETA = 1.0
VC2_GUIDANCE_SCALE = 12.0


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> Tensor:
    """VC2's "uniform" DDIM timesteps, int64 in sampling (descending) order: 50 → 981, 961, …, 1.

    The grid is {0, c, 2c, …} + 1 with c = N // num_steps. When N is not a multiple of
    ``num_steps`` the official grid is longer than asked (7 → 8 timesteps); that is kept.
    """
    if num_steps < 1:
        raise ConfigError(f"num_steps must be at least 1, got {num_steps}")
    spacing = num_train_timesteps // num_steps
    if spacing < 1:
        raise ConfigError(f"num_steps must be at most {num_train_timesteps}, got {num_steps}")
    ascending = torch.arange(0, num_train_timesteps, spacing, dtype=torch.int64) + 1
    if int(ascending[-1]) >= num_train_timesteps:
        # Happens when the spacing divides N − 1 (e.g. 37 or 300 steps for N = 1000): the official
        # sampler would index past the table.
        raise ConfigError(
            f"{num_steps} DDIM steps put the last timestep at {int(ascending[-1])}, beyond the "
            f"{num_train_timesteps} training timesteps (the uniform grid is shifted by +1); "
            f"choose another step count, e.g. {_nearest_valid_step_count(num_steps, num_train_timesteps)}"
        )
    return ascending.flip(0)


def _nearest_valid_step_count(num_steps: int, num_train_timesteps: int) -> int:
    """The largest step count below ``num_steps`` whose shifted grid stays inside the table."""
    for candidate in range(num_steps - 1, 0, -1):
        spacing = num_train_timesteps // candidate
        if (num_train_timesteps - 1) // spacing * spacing + 1 < num_train_timesteps:
            return candidate
    return 1


def _correctly_rounded_sqrt(values: Tensor) -> Tensor:
    """Element-wise IEEE sqrt, same dtype. The official constants come from numpy's sqrt, which is
    correctly rounded; torch's CPU sqrt is 1 ulp off at some inputs (4 of the ten 10-step
    √(1−ᾱ) values in float32), and x̂₀ amplifies that ulp. The arrays have ≤ 500 entries."""
    return torch.tensor([math.sqrt(v) for v in values.tolist()], dtype=values.dtype)


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-step constants, in sampling order, in the precisions the official sampler keeps them."""

    timesteps: Tensor  # int64
    alphas: Tensor  # float32, ᾱ[τ_k]
    alphas_prev: Tensor  # float64 copy of float32 ᾱ[τ_{k−1}], ᾱ[0] on the last step
    sigmas: Tensor  # float64, η·√((1−ᾱ_prev)/(1−ᾱ)·(1−ᾱ/ᾱ_prev))
    sqrt_one_minus_alphas: Tensor  # float32, correctly rounded
    scales: Tensor | None  # float32 s(τ_k); None without use_scale
    scales_prev: Tensor | None  # float32 s(τ_{k−1}), s(0) = 1 on the last step


def ddim_schedule(
    num_steps: int,
    *,
    eta: float = VC2_DDIM_ETA,
    alphas_cumprod: Tensor | None = None,
    scale_table: Tensor | None = None,
) -> DDIMSchedule:
    """The DDIM constants for ``num_steps``; ``scale_table`` (s(t) per timestep) enables use_scale.

    ``alphas_cumprod`` defaults to the float64-built VC2 buffer and is used as float32, as the
    official buffer is. Everything is computed on the CPU.
    """
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in [0, 1] (0: deterministic DDIM, 1: VC2 default), got {eta}")
    if alphas_cumprod is None:
        alphas_cumprod = scaled_linear_alphas_cumprod(precision="float64_then_float32")
    num_train_timesteps = alphas_cumprod.numel()
    timesteps = ddim_timesteps(num_steps, num_train_timesteps)
    check_alphas_cumprod(alphas_cumprod, int(timesteps.max()))
    table = alphas_cumprod.detach().to(device="cpu", dtype=torch.float32)

    # The step leaving timesteps[i] lands on timesteps[i + 1]; the last one lands on timestep 0.
    landing = torch.cat([timesteps[1:], timesteps.new_zeros(1)])
    alphas = table[timesteps]
    alphas_prev = table[landing].to(torch.float64)
    one_minus_alphas = 1.0 - alphas  # float32, as coded
    # The official code divides a float64 numpy array by this float32 tensor, which torch evaluates
    # as float32 reciprocal × float64; keeping that order makes σ bitwise equal (a true float64
    # division is up to 1.2e-8 off).
    variance_ratio = one_minus_alphas.reciprocal() * (1.0 - alphas_prev)
    sigmas = eta * _correctly_rounded_sqrt(variance_ratio * (1.0 - alphas.to(torch.float64) / alphas_prev))
    sqrt_one_minus_alphas = _correctly_rounded_sqrt(one_minus_alphas)

    scales = scales_prev = None
    if scale_table is not None:
        if scale_table.ndim != 1 or scale_table.numel() < num_train_timesteps:
            raise ConfigError(
                f"scale_table must be 1-D with at least {num_train_timesteps} entries, "
                f"got shape {tuple(scale_table.shape)}"
            )
        scale_cpu = scale_table.detach().to(device="cpu", dtype=torch.float32)
        scales, scales_prev = scale_cpu[timesteps], scale_cpu[landing]
    return DDIMSchedule(timesteps, alphas, alphas_prev, sigmas, sqrt_one_minus_alphas, scales, scales_prev)


@dataclass(frozen=True)
class DDIMStep:
    """Everything one DDIM step computed; passed to the sampler's ``callback``.

    Tensors other than ``t``/``x_in`` are in the update dtype; the schedule scalars are 0-dim.
    """

    step: int  # 0-based, in sampling order
    num_steps: int
    t: Tensor  # (b,) int64, what the denoiser received
    x_in: Tensor  # denoiser input (latent dtype)
    eps_cond: Tensor  # the conditional pass (the only pass without guidance)
    eps_uncond: Tensor | None  # None when a single pass was made
    eps: Tensor  # guided ε
    pred_x0_raw: Tensor  # (x − √(1−ᾱ_t)ε)/√ᾱ_t
    pred_x0: Tensor  # pred_x0_raw / s(t) with use_scale, else pred_x0_raw
    dir_xt: Tensor  # √(1−ᾱ_prev−σ²)·ε
    noise_draw: Tensor  # the raw standard-normal draw z
    noise: Tensor  # σ·z
    prev_sample: Tensor  # the new latent
    alpha: Tensor
    alpha_prev: Tensor
    sigma: Tensor
    sqrt_one_minus_alpha: Tensor
    scale: Tensor | None
    scale_prev: Tensor | None


@torch.no_grad()
def sample_ddim_cfg(
    model: Denoiser,
    x_T: Tensor,
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any] | None,
    *,
    num_steps: int = VC2_DDIM_STEPS,
    eta: float = VC2_DDIM_ETA,
    guidance_scale: float = VC2_GUIDANCE_SCALE,
    use_scale: bool = True,
    scale_b: float = VC2_SCALE_B,
    alphas_cumprod: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[DDIMStep], None] | None = None,
    stop_before_step: int | None = None,
) -> Tensor:
    """VideoCrafter2's DDIM + CFG sampler from ``x_T``; returns the final x_prev (not x̂₀).

    ``stop_before_step=n`` runs steps 0 … n−1 only and returns the latent step n would denoise
    (``x_T`` itself for n = 0), at timestep ``ddim_schedule(num_steps).timesteps[n]``: for callers
    that continue from a partly sampled latent (e.g. reward feedback on the model's own samples).

    ``uncond`` holds the keyword arguments that *change* for the unconditional pass (normally
    ``{"context": empty_prompt_embedding}``); they are applied over a copy of ``cond``, so fps
    and every other argument reach both passes, as in VC2 (its uncond dict is a copy of the
    cond dict). With ``uncond=None`` or ``guidance_scale == 1`` one pass is made per step.

    Per step: ε = ε_u + w·(ε_c − ε_u); x̂₀ = (x − √(1−ᾱ_t)ε)/√ᾱ_t [÷ s(t)];
    x_prev = √ᾱ_prev·[s(t_prev)·]x̂₀ + √(1−ᾱ_prev−σ²)·ε + σ·z, with z drawn every step (also
    when σ = 0). Runs under ``torch.no_grad``; see ``numerics.py`` for dtypes and noise.
    """
    state_dtype = x_T.dtype
    work_dtype = update_dtype(state_dtype)
    device = x_T.device
    scale_table = vc2_latent_scale_table(scale_b=scale_b) if use_scale else None
    schedule = ddim_schedule(num_steps, eta=eta, alphas_cumprod=alphas_cumprod, scale_table=scale_table)

    def on_device(values: Tensor) -> Tensor:
        return values.to(device=device, dtype=work_dtype)

    alphas, alphas_prev = on_device(schedule.alphas), on_device(schedule.alphas_prev)
    sigmas, sqrt_one_minus_alphas = on_device(schedule.sigmas), on_device(schedule.sqrt_one_minus_alphas)
    scales = on_device(schedule.scales) if schedule.scales is not None else None
    scales_prev = on_device(schedule.scales_prev) if schedule.scales_prev is not None else None

    two_passes = uncond is not None and guidance_scale != 1.0
    uncond_kwargs = {**cond, **uncond} if uncond is not None else None
    step_timesteps = schedule.timesteps.tolist()

    if stop_before_step is not None and not 0 <= stop_before_step < len(step_timesteps):
        raise ConfigError(f"stop_before_step must lie in [0, {len(step_timesteps)}), got {stop_before_step}")
    x = x_T
    for i, t_value in enumerate(step_timesteps):
        if i == stop_before_step:
            break
        t = torch.full((x.shape[0],), t_value, dtype=torch.int64, device=device)
        eps_cond = call_denoiser(model, x, t, cond).to(work_dtype)
        eps_uncond = None
        eps = eps_cond
        if two_passes:
            eps_uncond = call_denoiser(model, x, t, uncond_kwargs).to(work_dtype)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)

        alpha, alpha_prev, sigma = alphas[i], alphas_prev[i], sigmas[i]
        pred_x0_raw = (x.to(work_dtype) - sqrt_one_minus_alphas[i] * eps) / torch.sqrt(alpha)
        dir_xt = torch.sqrt(1.0 - alpha_prev - sigma**2) * eps
        noise_draw = draw_noise(x.shape, generator=generator, dtype=work_dtype, device=device)
        noise = sigma * noise_draw
        if scales is not None and scales_prev is not None:
            pred_x0 = pred_x0_raw / scales[i]
            prev_sample = (torch.sqrt(alpha_prev) * scales_prev[i]) * pred_x0 + dir_xt + noise
        else:
            pred_x0 = pred_x0_raw
            prev_sample = torch.sqrt(alpha_prev) * pred_x0 + dir_xt + noise

        if callback is not None:
            callback(
                DDIMStep(
                    step=i,
                    num_steps=len(step_timesteps),
                    t=t,
                    x_in=x,
                    eps_cond=eps_cond,
                    eps_uncond=eps_uncond,
                    eps=eps,
                    pred_x0_raw=pred_x0_raw,
                    pred_x0=pred_x0,
                    dir_xt=dir_xt,
                    noise_draw=noise_draw,
                    noise=noise,
                    prev_sample=prev_sample,
                    alpha=alpha,
                    alpha_prev=alpha_prev,
                    sigma=sigma,
                    sqrt_one_minus_alpha=sqrt_one_minus_alphas[i],
                    scale=scales[i] if scales is not None else None,
                    scale_prev=scales_prev[i] if scales_prev is not None else None,
                )
            )
        x = prev_sample.to(state_dtype)
    return x
