"""Precision and RNG rules shared by the samplers.

* The latent state keeps the dtype of ``x_T`` (the model dtype), but each update is computed in
  ``update_dtype`` — float32, or float64 for a float64 state — and rounded back once per step:
  in half precision, x̂₀ = (x − √(1−ᾱ)ε)/√ᾱ amplifies rounding by up to 1/√ᾱ ≈ 15.
* Noise is always drawn in float32 and then cast, so one seed gives the same noise for every
  latent dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ConfigError


def update_dtype(state_dtype: torch.dtype) -> torch.dtype:
    """The dtype the sampler update arithmetic runs in for a latent of ``state_dtype``."""
    if not state_dtype.is_floating_point:
        raise ConfigError(f"the initial latent x_T must be a floating tensor, got dtype {state_dtype}")
    return torch.float64 if state_dtype == torch.float64 else torch.float32


def draw_noise(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """One standard-normal draw, the way the official samplers draw it (one ``randn`` call).

    ``generator=None`` uses the global RNG of ``device``, as the official code does, so
    ``torch.manual_seed(s)`` before sampling replays it. With a generator, the draw happens on
    the generator's own device and is then moved, so a CPU generator gives the same noise
    whichever device runs the model.
    """
    if generator is None:
        noise = torch.randn(tuple(shape), dtype=torch.float32, device=device)
    else:
        noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device=generator.device)
    return noise.to(device=device, dtype=dtype)
