"""VideoCrafter2's DDIM + CFG sampler against the official trajectories (traj_ddim_vc2_*)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from hummingbird_t2v.diffusion.ddim import DDIMStep, ddim_schedule, sample_ddim_cfg
from hummingbird_t2v.diffusion.schedule import vc2_latent_scale_table
from hummingbird_t2v.errors import ConfigError

# Reference README, "Suggested tolerances for an fp32 re-implementation".
ATOL = 1e-5
PRED_X0_ATOL = 5e-5
SCALAR_ATOL = 1e-7
NOISE_SEED = 4321

CASES = ["eta1", "eta0", "eta0_noscale"]


class FakeUNet:
    """The golden's ε model, float32 left to right; records what each pass received.

    eps[b] = ((0.9·x[b] + 0.01·t[b]/1000) + 0.05·mean(context[b])) + 0.001·fps[b]
    """

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, x, t, *, context, fps):
        self.calls.append({"t": t.clone(), "context": context, "fps": fps.clone()})
        per_sample = (-1,) + (1,) * (x.ndim - 1)
        t_term = (0.01 * t.to(torch.float32) / 1000).view(per_sample)
        context_term = (0.05 * context.mean(dim=(1, 2))).view(per_sample)
        fps_term = (0.001 * fps.to(torch.float32)).view(per_sample)
        return 0.9 * x + t_term + context_term + fps_term


def load_case(golden_dir, case):
    path = golden_dir / f"traj_ddim_vc2_{case}.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["meta_json"])
    return {k: v.clone() for k, v in load_file(path).items()}, meta


def run_case(golden, meta, **overrides):
    model, steps = FakeUNet(), []
    kwargs = dict(
        num_steps=int(meta["steps"]),
        eta=float(meta["ddim_eta"]),
        guidance_scale=float(meta["unconditional_guidance_scale"]),
        use_scale=meta["use_scale"] == "True",
        scale_b=float(meta["scale_b"]),
        callback=steps.append,
    )
    kwargs.update(overrides)
    cond = {"context": golden["cond_context"], "fps": golden["fps"]}
    # Only the context changes for the unconditional pass; fps must reach it through cond.
    uncond = {"context": golden["uncond_context"]}
    torch.manual_seed(NOISE_SEED)
    output = sample_ddim_cfg(model, golden["x_T"], cond, uncond, **kwargs)
    return output, steps, model


@pytest.mark.parametrize("case", CASES)
def test_every_step_matches_the_official_trajectory(golden_dir, case):
    golden, meta = load_case(golden_dir, case)
    output, steps, _ = run_case(golden, meta)
    num_steps = int(meta["steps"])
    use_scale = meta["use_scale"] == "True"

    assert len(steps) == num_steps and all(isinstance(s, DDIMStep) for s in steps)
    assert torch.equal(torch.stack([s.t[0] for s in steps]), golden["timesteps"])
    for i, step in enumerate(steps):
        assert torch.equal(step.t, golden[f"step{i}.t"])
        assert golden[f"step{i}.index"].item() == num_steps - 1 - i
        # The global-RNG replay reproduces the official draws exactly (drawn even when σ = 0).
        assert torch.equal(step.noise_draw, golden[f"step{i}.noise_draw"]), f"step {i}: noise replay differs"
        for name in ("x_in", "eps_cond", "eps_uncond", "eps", "dir_xt", "noise", "prev_sample"):
            torch.testing.assert_close(
                getattr(step, name), golden[f"step{i}.{name}"], atol=ATOL, rtol=0, msg=f"step {i} {name}"
            )
        for name in ("pred_x0_raw", "pred_x0"):
            torch.testing.assert_close(
                getattr(step, name), golden[f"step{i}.{name}"], atol=PRED_X0_ATOL, rtol=0, msg=f"step {i} {name}"
            )
        scalars = {
            "alpha": "a_t",
            "alpha_prev": "a_prev",
            "sigma": "sigma_t",
            "sqrt_one_minus_alpha": "sqrt_one_minus_at",
        }
        if use_scale:
            scalars |= {"scale": "scale_t", "scale_prev": "scale_t_prev"}
        else:
            assert step.scale is None and step.scale_prev is None
        for ours, theirs in scalars.items():
            torch.testing.assert_close(
                getattr(step, ours).reshape(1), golden[f"step{i}.{theirs}"], atol=SCALAR_ATOL, rtol=0, msg=ours
            )
    torch.testing.assert_close(output, golden["output"], atol=ATOL, rtol=0)
    assert torch.equal(output, steps[-1].prev_sample)


@pytest.mark.parametrize("case", CASES)
def test_both_passes_get_fps_and_the_conditional_pass_comes_first(golden_dir, case):
    golden, meta = load_case(golden_dir, case)
    _, _, model = run_case(golden, meta)
    assert len(model.calls) == 2 * int(meta["steps"])
    for cond_call, uncond_call in zip(model.calls[0::2], model.calls[1::2], strict=True):
        assert cond_call["context"] is golden["cond_context"]
        assert uncond_call["context"] is golden["uncond_context"]
        assert cond_call["fps"].tolist() == uncond_call["fps"].tolist() == [28, 28]
        assert torch.equal(cond_call["t"], uncond_call["t"])


@pytest.mark.parametrize("case", CASES)
def test_the_ten_step_schedule_arrays(golden_dir, case):
    golden, meta = load_case(golden_dir, case)
    use_scale = meta["use_scale"] == "True"
    schedule = ddim_schedule(
        10, eta=float(meta["ddim_eta"]), scale_table=vc2_latent_scale_table() if use_scale else None
    )
    check_schedule(schedule, golden, prefix="", sigma_key="ddim_sigmas_f64", use_scale=use_scale)


def test_the_real_fifty_step_schedule(golden_dir):
    golden, _ = load_case(golden_dir, "eta1")
    schedule = ddim_schedule(50, eta=1.0, scale_table=vc2_latent_scale_table())
    check_schedule(schedule, golden, prefix="sched50.", sigma_key="sched50.ddim_sigmas_eta1_f64", use_scale=True)
    assert schedule.timesteps[0].item() == 981 and schedule.timesteps[-1].item() == 1
    assert schedule.sigmas[0].item() == pytest.approx(0.45446, abs=1e-5)


def check_schedule(schedule, golden, *, prefix, sigma_key, use_scale):
    """Our arrays are in sampling order; the official ones are ascending."""
    assert torch.equal(schedule.timesteps.flip(0), golden[f"{prefix}ddim_timesteps"])
    assert torch.equal(schedule.alphas.flip(0), golden[f"{prefix}ddim_alphas"])
    assert torch.equal(schedule.alphas_prev.flip(0), golden[f"{prefix}ddim_alphas_prev_f64"])
    assert torch.equal(schedule.sigmas.flip(0), golden[sigma_key])
    if "ddim_sqrt_one_minus_alphas" in golden and not prefix:
        assert torch.equal(schedule.sqrt_one_minus_alphas.flip(0), golden["ddim_sqrt_one_minus_alphas"])
    if use_scale:
        assert torch.equal(schedule.scales.flip(0), golden[f"{prefix}ddim_scale_arr"])
        assert torch.equal(schedule.scales_prev.flip(0).double(), golden[f"{prefix}ddim_scale_arr_prev_f64"])
    else:
        assert schedule.scales is None


@pytest.mark.parametrize("uncond_kind", ["none", "guidance_one"])
def test_one_pass_per_step_without_guidance(golden_dir, uncond_kind):
    golden, meta = load_case(golden_dir, "eta0_noscale")
    model, steps = FakeUNet(), []
    cond = {"context": golden["cond_context"], "fps": golden["fps"]}
    uncond = None if uncond_kind == "none" else {"context": golden["uncond_context"]}
    sample_ddim_cfg(
        model,
        golden["x_T"],
        cond,
        uncond,
        num_steps=4,
        eta=0.0,
        guidance_scale=1.0 if uncond else 12.0,
        callback=steps.append,
    )
    assert len(model.calls) == 4
    assert all(call["context"] is golden["cond_context"] for call in model.calls)
    assert all(s.eps_uncond is None and s.eps is s.eps_cond for s in steps)


def test_deterministic_ddim_ignores_the_noise_but_still_draws_it(golden_dir):
    golden, meta = load_case(golden_dir, "eta0")
    torch.manual_seed(0)
    first = sample_ddim_cfg(
        FakeUNet(),
        golden["x_T"],
        {"context": golden["cond_context"], "fps": golden["fps"]},
        {"context": golden["uncond_context"]},
        num_steps=5,
        eta=0.0,
    )
    after_first = torch.get_rng_state()
    torch.manual_seed(1)
    second = sample_ddim_cfg(
        FakeUNet(),
        golden["x_T"],
        {"context": golden["cond_context"], "fps": golden["fps"]},
        {"context": golden["uncond_context"]},
        num_steps=5,
        eta=0.0,
    )
    assert torch.equal(first, second)
    torch.manual_seed(0)
    for _ in range(5):
        torch.randn(golden["x_T"].shape)
    assert torch.equal(torch.get_rng_state(), after_first)


def test_float64_latents_follow_the_float32_golden(golden_dir):
    golden, meta = load_case(golden_dir, "eta1")
    model = FakeUNet()
    cond = {"context": golden["cond_context"].double(), "fps": golden["fps"]}
    torch.manual_seed(NOISE_SEED)
    output = sample_ddim_cfg(
        model, golden["x_T"].double(), cond, {"context": golden["uncond_context"].double()}, num_steps=10
    )
    assert output.dtype == torch.float64
    torch.testing.assert_close(output.float(), golden["output"], atol=ATOL, rtol=0)


def test_bad_arguments_raise_config_errors(golden_dir):
    golden, _ = load_case(golden_dir, "eta1")
    cond = {"context": golden["cond_context"], "fps": golden["fps"]}
    with pytest.raises(ConfigError, match="eta"):
        sample_ddim_cfg(FakeUNet(), golden["x_T"], cond, None, num_steps=2, eta=-0.5)
    with pytest.raises(ConfigError, match="num_steps"):
        sample_ddim_cfg(FakeUNet(), golden["x_T"], cond, None, num_steps=0)
    with pytest.raises(ConfigError, match="floating"):
        sample_ddim_cfg(FakeUNet(), golden["x_T"].long(), cond, None, num_steps=2)
    with pytest.raises(ConfigError, match="1-D"):
        table_2d = golden["alphas_cumprod"][None]
        sample_ddim_cfg(FakeUNet(), golden["x_T"], cond, None, num_steps=2, alphas_cumprod=table_2d)
