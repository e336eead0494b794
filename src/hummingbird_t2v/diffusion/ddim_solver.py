"""The teacher's ODE solver of stage-2 consistency distillation: one DDIM (η = 0) step on a coarse grid.

Latent consistency distillation walks the teacher one interval down a grid of
``num_ddim_timesteps`` points τ_i = c·(i+1) − 1 (c = N // num_ddim_timesteps; 50 points give
19, 39, …, 999). For a drawn index n the interval runs from t_s = τ_n to t_e = τ_{n−1}, or to 0
for n = 0, and the step is

    z_te = √ᾱ_prev · x̂₀ + √(1 − ᾱ_prev) · ε̂,    ᾱ_prev = ᾱ[τ_{n−1}]  (ᾱ[0] for n = 0)

with x̂₀ and ε̂ the teacher's LCM-form guided predictions (``lcm_guidance``). Plain functions:
the caller runs the teacher and passes its predictions in.

Precision, as the official solver does it: the ᾱ_prev table is float64 (the float32 ᾱ values
widened exactly), so a float32 prediction times it promotes z_te to float64. Cast the table to
float32 first for a float32 step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .schedule import check_alphas_cumprod

DEFAULT_DDIM_TIMESTEPS = 50


def ddim_solver_timesteps(num_ddim_timesteps: int = DEFAULT_DDIM_TIMESTEPS, num_train_timesteps: int = 1000) -> Tensor:
    """The solver grid τ_i = c·(i+1) − 1, i = 0 … n−1, with c = N // n; int64, ascending."""
    if not 1 <= num_ddim_timesteps <= num_train_timesteps:
        raise ConfigError(
            f"num_ddim_timesteps must be in 1..{num_train_timesteps} (the training timesteps), got {num_ddim_timesteps}"
        )
    spacing = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1, dtype=torch.int64) * spacing - 1


def solver_spacing(num_ddim_timesteps: int = DEFAULT_DDIM_TIMESTEPS, num_train_timesteps: int = 1000) -> int:
    """Distance between two grid points (20 for 50 points over 1000 timesteps): the skip k of one step."""
    return num_train_timesteps // num_ddim_timesteps


def solver_alphas_cumprod_prev(alphas_cumprod: Tensor, solver_timesteps: Tensor) -> Tensor:
    """float64 (n,) table of ᾱ at the end of each solver interval: [ᾱ[0], ᾱ[τ_0], …, ᾱ[τ_{n−2}]]."""
    check_alphas_cumprod(alphas_cumprod, int(solver_timesteps.max()))
    table = alphas_cumprod.detach().to("cpu", torch.float64)
    previous = torch.cat([table[:1], table[solver_timesteps[:-1].cpu()]])
    return previous.to(alphas_cumprod.device)


def solver_interval(index: Tensor, solver_timesteps: Tensor, skip: int) -> tuple[Tensor, Tensor]:
    """(t_s, t_e) for grid indices ``index`` (b,): t_s = τ[index], t_e = max(t_s − skip, 0); int64."""
    if index.dtype != torch.int64:
        raise ConfigError(f"solver indices must be int64, got {index.dtype}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= solver_timesteps.numel()):
        raise ConfigError(
            f"solver indices must lie in 0..{solver_timesteps.numel() - 1}, got {index.min()}..{index.max()}"
        )
    start = solver_timesteps.to(index.device)[index]
    return start, torch.clamp(start - skip, min=0)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """(b,) -> (b, 1, …, 1) against a (b, …) tensor."""
    if values.ndim != 1 or values.shape[0] != like.shape[0]:
        raise ConfigError(f"expected one value per sample ({like.shape[0]}), got shape {tuple(values.shape)}")
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def lcm_guidance(cond: Tensor, uncond: Tensor, w: Tensor) -> Tensor:
    """LCM-form classifier-free guidance ``cond + w·(cond − uncond)``, w (b,) per sample.

    The "Imagen" form u + s·(c − u) is the same with s = w + 1, so w ~ U[5, 15] is an effective
    guidance of 6 … 16. Stage 2 applies it to the teacher's x̂₀ and to its ε alike.
    """
    return cond + _per_sample(w, cond).to(cond.dtype) * (cond - uncond)


def ddim_step(pred_x0: Tensor, pred_eps: Tensor, alphas_cumprod_prev: Tensor) -> Tensor:
    """Deterministic DDIM step to the interval's end: √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε̂; ᾱ_prev is (b,).

    The result has the promoted dtype (float64 with the float64 table, as in the official solver).
    """
    alpha = _per_sample(alphas_cumprod_prev, pred_x0)
    return torch.sqrt(alpha) * pred_x0 + torch.sqrt(1.0 - alpha) * pred_eps
