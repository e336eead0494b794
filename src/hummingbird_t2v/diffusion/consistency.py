"""Multistep consistency (LCM-style) sampling, as Hummingbird's T2V-Turbo scheduler does it.

One denoiser call per step and no classifier-free guidance: the guidance scale is distilled
into the student and arrives through ``cond["timestep_cond"]`` (see ``guidance.py``).
The boundary scalings and x̂₀ are public because stage-2 consistency distillation reuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from .denoiser import Denoiser, call_denoiser
from .numerics import draw_noise, update_dtype
from .schedule import check_alphas_cumprod, scaled_linear_alphas_cumprod

DEFAULT_CONSISTENCY_STEPS = 4
DEFAULT_ORIGIN_STEPS = 50  # `lcm_origin_steps`: the teacher's DDIM grid the student was distilled on
SIGMA_DATA = 0.5
TIMESTEP_SCALING = 10.0


@dataclass(frozen=True)
class ConsistencyStep:
    """Everything one consistency step computed; passed to the sampler's ``callback``."""

    step: int  # 0-based, in sampling order
    num_steps: int
    t: Tensor  # (b,) int64, what the denoiser received
    x_in: Tensor  # denoiser input, latent dtype
    eps: Tensor  # denoiser output, update dtype
    pred_x0: Tensor  # x̂₀ = (x − √(1−ᾱ_t)ε)/√ᾱ_t
    c_skip: Tensor  # 0-dim
    c_out: Tensor  # 0-dim
    denoised: Tensor  # c_out·x̂₀ + c_skip·x (the returned sample on the last step)
    prev_sample: Tensor  # √ᾱ_t'·denoised + √(1−ᾱ_t')·noise (discarded on the last step)
    noise: Tensor  # the fresh Gaussian draw


def consistency_timesteps(
    num_steps: int, origin_steps: int = DEFAULT_ORIGIN_STEPS, num_train_timesteps: int = 1000
) -> Tensor:
    """Sampling timesteps, int64 descending: 4 → [999, 759, 519, 279], 8 → [999, 879, …, 159].

    The origin grid is {c−1, 2c−1, …, N−1} with c = N // origin_steps; it is walked from the top
    with stride origin_steps // num_steps, keeping the first ``num_steps`` entries.
    """
    if not 1 <= origin_steps <= num_train_timesteps:
        raise ConfigError(f"origin_steps must be in 1..{num_train_timesteps}, got {origin_steps}")
    if not 1 <= num_steps <= origin_steps:
        raise ConfigError(
            f"num_steps must be in 1..{origin_steps} (origin_steps), got {num_steps}; "
            "raise origin_steps to sample with more steps"
        )
    spacing = num_train_timesteps // origin_steps
    origin_grid = torch.arange(1, origin_steps + 1, dtype=torch.int64) * spacing - 1
    stride = origin_steps // num_steps
    return origin_grid.flip(0)[::stride][:num_steps].clone()


def consistency_boundary_scalings(
    t: Tensor | int, sigma_data: float = SIGMA_DATA, timestep_scaling: float = TIMESTEP_SCALING
) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out) of the consistency parametrisation f(x, t) = c_skip·x + c_out·x̂₀.

    With s = timestep_scaling·t: c_skip = σ_d²/(s² + σ_d²), c_out = s/√(s² + σ_d²); c_skip → 1
    and c_out → 0 at t = 0, and c_skip < 1e-7 for t ≥ 159. Integer timesteps are evaluated in
    float32 in the official op order (equal to the goldens; on some CPUs c_out at t = 159 rounds
    one ulp below their 1.0); a floating ``t`` keeps its dtype. The results have the shape of ``t``.
    """
    t = torch.as_tensor(t)
    work = t.dtype if t.is_floating_point() else torch.float32
    scaled = t.to(work) * timestep_scaling
    denominator = scaled**2 + sigma_data**2
    return sigma_data**2 / denominator, scaled / torch.sqrt(denominator)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Broadcast a 0-dim or (b,) tensor against a (b, …) tensor."""
    if values.ndim == 0:
        return values
    if values.ndim == 1 and values.shape[0] == like.shape[0]:
        return values.reshape(-1, *([1] * (like.ndim - 1)))
    raise ConfigError(f"expected a scalar or one value per sample ({like.shape[0]}), got shape {tuple(values.shape)}")


def predicted_original_sample(x: Tensor, eps: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """x̂₀ = (x − √(1−ᾱ_t)·ε)/√ᾱ_t; ``alphas_cumprod_t`` is 0-dim or one value per sample.

    Computed in torch's promoted dtype of the inputs (a float64 (b,) ᾱ makes it float64).
    """
    alpha = _per_sample(alphas_cumprod_t, x)
    return (x - torch.sqrt(1.0 - alpha) * eps) / torch.sqrt(alpha)


@torch.no_grad()
def sample_consistency(
    model: Denoiser,
    x_T: Tensor,
    cond: Mapping[str, Any],
    *,
    num_steps: int = DEFAULT_CONSISTENCY_STEPS,
    alphas_cumprod: Tensor | None = None,
    origin_steps: int = DEFAULT_ORIGIN_STEPS,
    generator: torch.Generator | None = None,
    callback: Callable[[ConsistencyStep], None] | None = None,
    gamma: float = 1.0,
) -> Tensor:
    """Multistep consistency sampling from pure noise ``x_T``; returns the last step's ``denoised``.

    Step at t (next timestep t′, or t itself on the last step): ε = model(x, t, **cond),
    x̂₀ from ε, denoised = c_out·x̂₀ + c_skip·x, then x ← √ᾱ_t′·denoised + √(1−ᾱ_t′)·n with a
    fresh draw n. n is drawn on the last step too (its result is discarded) so the RNG stream
    matches the official sampler. ``alphas_cumprod`` defaults to the float32 scaled-linear
    table. Runs under ``torch.no_grad``; see ``numerics.py`` for dtypes and noise.

    ``gamma`` < 1 keeps part of the path (the stochastic ratio of trajectory consistency
    distillation): the step goes deterministically (DDIM, with the ε that ``denoised`` implies)
    to s = ⌊(1−γ)·t′⌋ and is noised from s to t′ with the fresh draw. γ = 1 is the LCM step
    above, exactly; γ = 0 is a deterministic DDIM step.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"gamma must lie in [0, 1] (1: LCM sampling, 0: deterministic), got {gamma}")
    state_dtype = x_T.dtype
    work_dtype = update_dtype(state_dtype)
    device = x_T.device
    if alphas_cumprod is None:
        alphas_cumprod = scaled_linear_alphas_cumprod(precision="float32")
    num_train_timesteps = alphas_cumprod.numel()
    timesteps = consistency_timesteps(num_steps, origin_steps, num_train_timesteps)
    check_alphas_cumprod(alphas_cumprod, int(timesteps.max()))

    alphas = alphas_cumprod.to(device=device, dtype=work_dtype)
    c_skips, c_outs = consistency_boundary_scalings(timesteps)
    c_skips, c_outs = c_skips.to(device=device, dtype=work_dtype), c_outs.to(device=device, dtype=work_dtype)
    step_timesteps = timesteps.tolist()

    x = x_T
    denoised = x_T  # replaced on the first step (num_steps ≥ 1 is checked above)
    for i, t_value in enumerate(step_timesteps):
        next_t_value = step_timesteps[i + 1] if i + 1 < len(step_timesteps) else t_value
        t = torch.full((x.shape[0],), t_value, dtype=torch.int64, device=device)
        eps = call_denoiser(model, x, t, cond).to(work_dtype)
        x_work = x.to(work_dtype)

        pred_x0 = predicted_original_sample(x_work, eps, alphas[t_value])
        denoised = c_outs[i] * pred_x0 + c_skips[i] * x_work
        noise = draw_noise(x.shape, generator=generator, dtype=work_dtype, device=device)
        alpha_next = alphas[next_t_value]
        if gamma == 1.0:
            prev_sample = torch.sqrt(alpha_next) * denoised + torch.sqrt(1.0 - alpha_next) * noise
        else:
            alpha_t, alpha_kept = alphas[t_value], alphas[int((1.0 - gamma) * next_t_value)]
            implied_eps = (x_work - torch.sqrt(alpha_t) * denoised) / torch.sqrt(1.0 - alpha_t)
            kept = torch.sqrt(alpha_kept) * denoised + torch.sqrt(1.0 - alpha_kept) * implied_eps
            prev_sample = torch.sqrt(alpha_next / alpha_kept) * kept + torch.sqrt(1.0 - alpha_next / alpha_kept) * noise

        if callback is not None:
            callback(
                ConsistencyStep(
                    step=i,
                    num_steps=len(step_timesteps),
                    t=t,
                    x_in=x,
                    eps=eps,
                    pred_x0=pred_x0,
                    c_skip=c_skips[i],
                    c_out=c_outs[i],
                    denoised=denoised,
                    prev_sample=prev_sample,
                    noise=noise,
                )
            )
        x = prev_sample.to(state_dtype)
    return denoised.to(state_dtype)
