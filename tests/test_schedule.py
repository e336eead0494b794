"""Schedules, timestep grids, boundary scalings and the guidance embedding against the official goldens."""

from __future__ import annotations

import pytest
import torch
from golden_tolerances import GUIDANCE_EMBEDDING_ATOL, ONE_ULP_NEAR_ONE
from safetensors.torch import load_file

from hummingbird_t2v.diffusion.consistency import (
    consistency_boundary_scalings,
    consistency_timesteps,
    predicted_original_sample,
)
from hummingbird_t2v.diffusion.ddim import ddim_timesteps
from hummingbird_t2v.diffusion.guidance import (
    guidance_embedding_for,
    guidance_scale_embedding,
)
from hummingbird_t2v.diffusion.schedule import (
    latent_scale,
    scaled_linear_alphas_cumprod,
    vc2_latent_scale_table,
)
from hummingbird_t2v.errors import ConfigError


@pytest.fixture(scope="module")
def traj4(golden_dir):
    return load_file(golden_dir / "traj_4step.safetensors")


@pytest.fixture(scope="module")
def ddim_eta1(golden_dir):
    return load_file(golden_dir / "traj_ddim_vc2_eta1.safetensors")


@pytest.fixture(scope="module")
def stage2(golden_dir):
    return load_file(golden_dir / "stage2_step_tiny.safetensors")


def test_float32_alphas_match_the_consistency_scheduler_and_stage2_bitwise(traj4, stage2):
    alphas = scaled_linear_alphas_cumprod(precision="float32")
    assert alphas.dtype == torch.float32 and alphas.shape == (1000,)
    assert torch.equal(alphas, traj4["alphas_cumprod"])
    assert torch.equal(alphas, stage2["alphas_cumprod"])
    assert alphas[999].item() == pytest.approx(0.004660, abs=1e-6)
    assert alphas[279].item() == pytest.approx(0.6257, abs=1e-4)


def test_float64_built_alphas_match_the_vc2_buffer_bitwise_and_differ_from_float32(ddim_eta1):
    alphas = scaled_linear_alphas_cumprod(precision="float64_then_float32")
    assert alphas.dtype == torch.float32
    assert torch.equal(alphas, ddim_eta1["alphas_cumprod"])
    # The two variants are genuinely different tables; a test using the wrong one must notice.
    assert not torch.equal(alphas, scaled_linear_alphas_cumprod(precision="float32"))
    assert alphas[0].item() == pytest.approx(0.99915, abs=1e-6)


def test_alphas_reject_bad_arguments():
    with pytest.raises(ConfigError, match="precision"):
        scaled_linear_alphas_cumprod(precision="float16")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="beta_start"):
        scaled_linear_alphas_cumprod(beta_start=0.02, beta_end=0.012)


def test_vc2_scale_table_matches_the_official_array(ddim_eta1):
    table = vc2_latent_scale_table()
    official = ddim_eta1["scale_arr"]
    assert table.shape == (1000,)
    assert torch.equal(table, official[:1000])
    # The official array's 400 extra entries (length bug) are all scale_b and never indexed.
    assert official.shape == (1400,) and torch.all(official[1000:] == official[999])
    assert table[0].item() == 1.0 and table[399].item() == pytest.approx(0.7)
    assert table[200].item() == pytest.approx(1 - 0.3 * 200 / 399, abs=1e-7)


def test_latent_scale_indexes_the_table_for_any_shape():
    t = torch.tensor([[0, 1], [399, 981]])
    scales = latent_scale(t)
    assert scales.shape == (2, 2)
    assert scales[0, 0].item() == 1.0
    assert scales[1, 1].item() == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="integers"):
        latent_scale(torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="0..999"):
        latent_scale(torch.tensor([1000]))


def test_consistency_timesteps_follow_the_origin_grid():
    assert consistency_timesteps(4).tolist() == [999, 759, 519, 279]
    assert consistency_timesteps(8).tolist() == [999, 879, 759, 639, 519, 399, 279, 159]
    assert consistency_timesteps(1).tolist() == [999]
    assert consistency_timesteps(50).tolist() == list(range(999, 0, -20))
    assert consistency_timesteps(4).dtype == torch.int64
    with pytest.raises(ConfigError, match="origin_steps"):
        consistency_timesteps(51)
    with pytest.raises(ConfigError, match="num_steps"):
        consistency_timesteps(0)


def test_ddim_timesteps_are_uniform_plus_one():
    steps50 = ddim_timesteps(50)
    assert steps50.tolist() == list(range(981, 0, -20))
    assert ddim_timesteps(10).tolist() == list(range(901, 0, -100))
    assert len(ddim_timesteps(7)) == 8  # official quirk: 1000 // 7 = 142 gives 8 grid points
    with pytest.raises(ConfigError, match="beyond"):
        ddim_timesteps(37)  # 1000 // 37 = 27 divides 999, so the grid would reach t = 1000
    with pytest.raises(ConfigError, match="at least 1"):
        ddim_timesteps(0)


def test_boundary_scalings_equal_the_goldens_to_the_last_bit_the_cpu_allows(golden_dir, stage2):
    traj8 = load_file(golden_dir / "traj_8step.safetensors")
    c_skip, c_out = consistency_boundary_scalings(traj8["timesteps"])
    assert c_skip.dtype == torch.float32
    assert torch.equal(c_skip, torch.cat([traj8[f"step{i}.c_skip"] for i in range(8)]))
    torch.testing.assert_close(c_out, torch.cat([traj8[f"step{i}.c_out"] for i in range(8)]), atol=ONE_ULP_NEAR_ONE, rtol=0)
    for prefix in ("", "caseB."):
        for end in ("start", "end"):
            c_skip, c_out = consistency_boundary_scalings(stage2[f"{prefix}{end}_timesteps"])
            assert torch.equal(c_skip, stage2[f"{prefix}c_skip_{end}"])
            torch.testing.assert_close(c_out, stage2[f"{prefix}c_out_{end}"], atol=ONE_ULP_NEAR_ONE, rtol=0)
    c_skip0, c_out0 = consistency_boundary_scalings(0)
    assert (c_skip0.item(), c_out0.item()) == (1.0, 0.0)


def test_predicted_original_sample_inverts_the_forward_process():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn((2, 4, 3, 4, 4), generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    alphas = torch.tensor([0.9, 0.2], dtype=torch.float64)
    x_t = alphas.sqrt().view(-1, 1, 1, 1, 1) * x0 + (1 - alphas).sqrt().view(-1, 1, 1, 1, 1) * eps
    torch.testing.assert_close(predicted_original_sample(x_t, eps, alphas), x0)
    torch.testing.assert_close(predicted_original_sample(x_t[:1], eps[:1], alphas[0]), x0[:1])
    with pytest.raises(ConfigError, match="one value per sample"):
        predicted_original_sample(x_t, eps, torch.tensor([0.5, 0.5, 0.5]))


def test_guidance_embedding_equals_the_official_one(traj4, stage2):
    close = {"atol": GUIDANCE_EMBEDDING_ATOL, "rtol": 0}
    torch.testing.assert_close(guidance_scale_embedding(torch.tensor([7.5, 7.5])), traj4["w_embedding"], **close)
    torch.testing.assert_close(guidance_embedding_for(7.5, 2), traj4["w_embedding"], **close)
    torch.testing.assert_close(guidance_scale_embedding(stage2["w"]), stage2["w_embedding"], **close)
    torch.testing.assert_close(guidance_scale_embedding(stage2["caseB.w"]), stage2["caseB.w_embedding"], **close)
    # The tolerance still tells the official layout from a near miss: dim/2 instead of dim/2 − 1 in the
    # frequency exponent moves entries far beyond it.
    half = 128
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / half))
    angles = torch.full((2,), 7500.0)[:, None] * freqs[None, :]
    near_miss = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    assert (near_miss - traj4["w_embedding"]).abs().max() > 10 * GUIDANCE_EMBEDDING_ATOL


def test_guidance_embedding_layout_and_errors():
    embedding = guidance_scale_embedding(torch.tensor([0.0, 1.0]), dim=8)
    assert embedding.shape == (2, 8)
    # w = 0: sin half is 0, cos half is 1.
    assert torch.equal(embedding[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    # Frequency 0 is exp(0) = 1, so the first sin entry is sin(1000 w).
    assert embedding[1, 0].item() == pytest.approx(torch.sin(torch.tensor(1000.0)).item(), abs=1e-6)
    with pytest.raises(ConfigError, match="1-D"):
        guidance_scale_embedding(torch.tensor(7.5))
    with pytest.raises(ConfigError, match="even"):
        guidance_scale_embedding(torch.tensor([7.5]), dim=7)
