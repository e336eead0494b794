"""The denoiser seam: output checks, the dtype adapter, and sampler argument errors."""

from __future__ import annotations

import pytest
import torch

from hummingbird_t2v.diffusion.consistency import sample_consistency
from hummingbird_t2v.diffusion.ddim import sample_ddim_cfg
from hummingbird_t2v.diffusion.denoiser import DenoiserError, call_denoiser, cast_denoiser
from hummingbird_t2v.diffusion.numerics import draw_noise
from hummingbird_t2v.errors import ConfigError, HummingbirdError

X = torch.zeros((1, 4, 2, 3, 3))
T = torch.tensor([999])


def test_call_denoiser_passes_cond_as_keywords_and_checks_the_output():
    seen = {}

    def model(x, t, **cond):
        seen.update(cond)
        return torch.ones_like(x)

    assert torch.equal(call_denoiser(model, X, T, {"context": "c", "fps": 8}), torch.ones_like(X))
    assert seen == {"context": "c", "fps": 8}

    with pytest.raises(DenoiserError, match=r"shape \(1, 8, 2, 3, 3\)"):
        call_denoiser(lambda x, t: torch.zeros((1, 8, 2, 3, 3)), X, T, {})
    with pytest.raises(DenoiserError, match="tuple"):
        call_denoiser(lambda x, t: (x,), X, T, {})
    assert issubclass(DenoiserError, HummingbirdError)


def test_cast_denoiser_runs_the_model_in_its_dtype_and_returns_the_callers():
    seen = {}

    def half_model(x, t, *, context, fps):
        seen.update(x=x.dtype, context=context.dtype, fps=fps.dtype, t=t.dtype)
        return x + context.mean()

    wrapped = cast_denoiser(half_model, torch.bfloat16)
    eps = wrapped(X, T, context=torch.ones((1, 2, 3)), fps=torch.tensor([8]))
    assert eps.dtype == torch.float32
    assert seen == {"x": torch.bfloat16, "context": torch.bfloat16, "fps": torch.int64, "t": torch.int64}


def test_a_float32_trajectory_around_a_bfloat16_model():
    calls = []

    def model(x, t, **cond):
        calls.append(x.dtype)
        return 0.5 * x

    x_T = torch.randn((1, 4, 2, 3, 3), generator=torch.Generator().manual_seed(0))
    out = sample_consistency(
        cast_denoiser(model, torch.bfloat16), x_T, {}, num_steps=2, generator=torch.Generator().manual_seed(1)
    )
    assert out.dtype == torch.float32 and calls == [torch.bfloat16, torch.bfloat16]


def test_noise_from_a_generator_does_not_depend_on_the_latent_dtype():
    draws = [
        draw_noise((2, 3), generator=torch.Generator().manual_seed(5), dtype=dtype, device=torch.device("cpu"))
        for dtype in (torch.float32, torch.float64)
    ]
    assert draws[1].dtype == torch.float64
    assert torch.equal(draws[0].double(), draws[1])


def test_samplers_report_bad_arguments_as_config_errors():
    model = lambda x, t, **cond: x  # noqa: E731
    with pytest.raises(ConfigError, match="num_steps"):
        sample_consistency(model, X, {}, num_steps=60)
    with pytest.raises(ConfigError, match="floating"):
        sample_consistency(model, X.long(), {})
    with pytest.raises(ConfigError, match="1-D"):
        sample_consistency(model, X, {}, alphas_cumprod=torch.ones((2, 1000)))
    with pytest.raises(ConfigError, match="eta"):
        sample_ddim_cfg(model, X, {}, None, num_steps=2, eta=1.5)
    with pytest.raises(DenoiserError):
        sample_ddim_cfg(lambda x, t: x[:, :1], X, {}, None, num_steps=2)


def test_ddim_can_stop_before_a_step_and_return_the_latent_that_step_denoises():
    model = lambda x, t, **cond: 0.5 * x + cond["context"]  # noqa: E731
    x_T = torch.randn((2, 4, 2, 3, 3), generator=torch.Generator().manual_seed(1))
    inputs = []
    options = {"num_steps": 5, "eta": 1.0, "guidance_scale": 3.0, "use_scale": False}
    sample_ddim_cfg(
        model, x_T, {"context": 0.1}, {"context": 0.0}, generator=torch.Generator().manual_seed(2),
        callback=lambda step: inputs.append(step.x_in), **options,
    )
    for n in (0, 3):
        partial = sample_ddim_cfg(
            model, x_T, {"context": 0.1}, {"context": 0.0}, generator=torch.Generator().manual_seed(2),
            stop_before_step=n, **options,
        )
        assert torch.equal(partial, inputs[n])
    with pytest.raises(ConfigError, match="stop_before_step"):
        sample_ddim_cfg(model, x_T, {"context": 0.1}, None, num_steps=5, stop_before_step=5)
