"""The consistency sampler's gamma (how much of each step's noise is drawn fresh)."""

from __future__ import annotations

import pytest
import torch

from hummingbird_t2v.diffusion.consistency import sample_consistency
from hummingbird_t2v.diffusion.schedule import scaled_linear_alphas_cumprod
from hummingbird_t2v.errors import ConfigError


def eps_model(x, t, **cond):
    return 0.3 * x + 0.02 * (t.to(x.dtype) / 1000).view(-1, *([1] * (x.ndim - 1)))


def _sample(gamma, seed, steps=None):
    """gamma None: the sampler's own default."""
    x_T = torch.randn((2, 4, 3, 6, 6), generator=torch.Generator().manual_seed(0))
    options = {} if gamma is None else {"gamma": gamma}
    return sample_consistency(
        eps_model, x_T, {}, num_steps=4, generator=torch.Generator().manual_seed(seed),
        callback=None if steps is None else steps.append, **options,
    )


def test_gamma_zero_is_deterministic_and_one_is_the_lcm_step():
    assert torch.equal(_sample(0.0, 1), _sample(0.0, 2))
    assert not torch.equal(_sample(1.0, 1), _sample(1.0, 2))
    assert not torch.equal(_sample(0.5, 1), _sample(0.5, 2))
    assert torch.equal(_sample(1.0, 1), _sample(None, 1))


def test_an_intermediate_gamma_goes_by_ddim_to_s_then_adds_fresh_noise_to_t_next():
    steps = []
    _sample(0.5, 3, steps)
    alphas = scaled_linear_alphas_cumprod(precision="float32")
    first, second = steps[0], steps[1]
    t, t_next = int(first.t[0]), int(second.t[0])
    s = int(0.5 * t_next)
    eps = (first.x_in - alphas[t].sqrt() * first.denoised) / (1 - alphas[t]).sqrt()
    at_s = alphas[s].sqrt() * first.denoised + (1 - alphas[s]).sqrt() * eps
    ratio = alphas[t_next] / alphas[s]
    expected = ratio.sqrt() * at_s + (1 - ratio).sqrt() * first.noise
    torch.testing.assert_close(first.prev_sample, expected)
    torch.testing.assert_close(second.x_in, expected)


@pytest.mark.parametrize("gamma", [-0.1, 1.5])
def test_gamma_outside_zero_one_is_refused(gamma):
    with pytest.raises(ConfigError, match=r"gamma must lie in \[0, 1\]"):
        _sample(gamma, 0)
