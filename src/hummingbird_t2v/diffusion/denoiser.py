"""The seam between samplers and networks: a denoiser is any ``model(x, t, **cond) -> eps``.

``x`` is the noisy latent (b, c, frames, h, w), ``t`` a (b,) int64 tensor of timesteps, and
``cond`` a dict of keyword arguments passed through untouched (for our U-Nets ``context=``,
``fps=``, ``timestep_cond=``). It returns the ε prediction with the shape of ``x``. The
samplers know no model class, so the teacher, the students and training targets all plug in
here; a U-Net module already satisfies the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import HummingbirdError


class Denoiser(Protocol):
    """ε-prediction network: ``(x, t, **cond) -> eps`` with ``eps.shape == x.shape``."""

    def __call__(self, x: Tensor, t: Tensor, /, **cond: Any) -> Tensor: ...


class DenoiserError(HummingbirdError):
    """A denoiser returned something a sampler cannot use (wrong type or shape)."""


def call_denoiser(model: Denoiser, x: Tensor, t: Tensor, cond: Mapping[str, Any]) -> Tensor:
    """``model(x, t, **cond)``, checked to be a tensor shaped like ``x``."""
    eps = model(x, t, **cond)
    if not isinstance(eps, Tensor):
        raise DenoiserError(
            f"the denoiser returned {type(eps).__name__}, expected a tensor; wrap models that "
            "return a tuple or an output object so that they return the ε tensor"
        )
    if eps.shape != x.shape:
        raise DenoiserError(
            f"the denoiser returned shape {tuple(eps.shape)} for a latent of shape {tuple(x.shape)}; "
            "check that the model's out_channels equals its in_channels and that it predicts ε"
        )
    return eps


def cast_denoiser(model: Denoiser, dtype: torch.dtype) -> Denoiser:
    """Run ``model`` in ``dtype`` while the sampler keeps its latent in another dtype.

    ``x`` and every floating tensor in ``cond`` are cast to ``dtype`` (integer tensors such as
    fps stay as they are) and ε is cast back to the caller's ``x`` dtype. Use it to keep a
    float32 latent trajectory around a half-precision network.
    """

    def cast(value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_floating_point():
            return value.to(dtype)
        return value

    def denoise(x: Tensor, t: Tensor, /, **cond: Any) -> Tensor:
        eps = model(x.to(dtype), t, **{name: cast(value) for name, value in cond.items()})
        return eps.to(x.dtype)

    return denoise
