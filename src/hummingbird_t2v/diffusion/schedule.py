"""Noise schedules: the ᾱ tables of the two official samplers and VideoCrafter2's latent scale s(t).

Every table is computed on the CPU and only then moved to ``device``: a CUDA cumprod is a
parallel scan with a different rounding order, and the goldens pin the CPU values bitwise.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ..errors import ConfigError

AlphaPrecision = Literal["float32", "float64_then_float32"]

# Linear-in-sqrt β range shared by VideoCrafter2 and Hummingbird (yaml `linear_start` / `linear_end`).
DEFAULT_BETA_START = 0.00085
DEFAULT_BETA_END = 0.012
DEFAULT_NUM_TRAIN_TIMESTEPS = 1000

# VideoCrafter2 `use_scale` settings (inference_t2v_512_v2.0.yaml).
VC2_SCALE_A = 1.0
VC2_SCALE_B = 0.7
VC2_SCALE_MID_STEP = 400


def scaled_linear_alphas_cumprod(
    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS,
    beta_start: float = DEFAULT_BETA_START,
    beta_end: float = DEFAULT_BETA_END,
    *,
    precision: AlphaPrecision = "float32",
    device: torch.device | str | None = None,
) -> Tensor:
    """ᾱ_t = ∏_{s≤t}(1 − β_s) with β = linspace(√beta_start, √beta_end, N)², as a float32 (N,) tensor.

    The two official samplers build this table differently and the results differ by up to
    1e-6 relative, so both are kept:

    * ``"float32"``: β and the cumulative product in float32 (the T2V-Turbo consistency
      scheduler, also used by stage-2 training; goldens ``traj_*step``, ``stage2_step_tiny``).
    * ``"float64_then_float32"``: computed in float64 and stored as float32 (the
      ``LatentDiffusion`` buffer read by VideoCrafter2's DDIM sampler; goldens ``traj_ddim_*``).
    """
    if num_train_timesteps < 2:
        raise ConfigError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ConfigError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    if precision == "float32":
        work_dtype = torch.float32
    elif precision == "float64_then_float32":
        work_dtype = torch.float64
    else:
        raise ConfigError(f"precision must be 'float32' or 'float64_then_float32', got {precision!r}")
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=work_dtype) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return alphas_cumprod.to(torch.float32).to(device)


def check_alphas_cumprod(alphas_cumprod: Tensor, largest_timestep: int) -> None:
    """Raise ConfigError unless ``alphas_cumprod`` is a 1-D floating table covering ``largest_timestep``."""
    if alphas_cumprod.ndim != 1 or not alphas_cumprod.is_floating_point():
        raise ConfigError(
            f"alphas_cumprod must be a 1-D floating tensor, got shape {tuple(alphas_cumprod.shape)} "
            f"and dtype {alphas_cumprod.dtype}"
        )
    if alphas_cumprod.numel() <= largest_timestep:
        raise ConfigError(
            f"alphas_cumprod has {alphas_cumprod.numel()} entries but the schedule uses timestep {largest_timestep}"
        )


def vc2_latent_scale_table(
    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS,
    scale_a: float = VC2_SCALE_A,
    scale_b: float = VC2_SCALE_B,
    mid_step: int = VC2_SCALE_MID_STEP,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """VideoCrafter2's latent scale s(t) for t = 0 … N−1, float32 (N,).

    s ramps linearly from ``scale_a`` to ``scale_b`` over the first ``mid_step`` timesteps and
    stays at ``scale_b`` after: with the defaults s(t) = 1 − 0.3·t/399 for t < 400, else 0.7.
    VC2 trained on x_t = √ᾱ_t·s(t)·x₀ + √(1−ᾱ_t)·ε, so its sampler divides x̂₀ by s(t).

    The official array is 400 entries longer (a length bug: ``mid_step`` + N entries); the
    extra tail is all ``scale_b`` and never indexed, so it is left out here. The ramp is built
    in float64 and rounded once, as the official one is (a float32 linspace differs in the last bit).
    """
    if not 0 < mid_step <= num_train_timesteps:
        raise ConfigError(f"mid_step must be in 1..{num_train_timesteps}, got {mid_step}")
    ramp = torch.linspace(scale_a, scale_b, mid_step, dtype=torch.float64)
    flat = torch.full((num_train_timesteps - mid_step,), scale_b, dtype=torch.float64)
    return torch.cat([ramp, flat]).to(torch.float32).to(device)


def latent_scale(t: Tensor, table: Tensor | None = None) -> Tensor:
    """s(t) for integer timesteps ``t`` (any shape), from ``table`` (default: the VC2 table)."""
    if t.is_floating_point():
        raise ConfigError(f"timesteps must be integers to index the scale table, got dtype {t.dtype}")
    if table is None:
        table = vc2_latent_scale_table(device=t.device)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= table.numel()):
        raise ConfigError(f"timesteps must lie in 0..{table.numel() - 1}, got {t.min()}..{t.max()}")
    return table.to(t.device)[t]
