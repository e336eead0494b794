"""The multistep consistency sampler against the official T2V-Turbo trajectories (traj_4step / traj_8step)."""

from __future__ import annotations

import pytest
import torch
from golden_tolerances import GUIDANCE_EMBEDDING_ATOL
from safetensors.torch import load_file

from hummingbird_t2v.diffusion.consistency import ConsistencyStep, sample_consistency
from hummingbird_t2v.diffusion.guidance import guidance_embedding_for

TRAJECTORY_ATOL = 1e-5  # reference README: sampler trajectories


class FakeEps:
    """The golden's deterministic ε model: 0.1·x + 0.01·t/1000 with that sample's t."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, x, t, **cond):
        self.calls.append({"dtype": x.dtype, "t": t.clone(), **cond})
        t_term = (0.01 * t.to(x.dtype) / 1000).view(-1, *([1] * (x.ndim - 1)))
        return 0.1 * x + t_term


def load(golden_dir, num_steps):
    return {k: v.clone() for k, v in load_file(golden_dir / f"traj_{num_steps}step.safetensors").items()}


def run_golden(golden, num_steps, *, x_T=None, generator=None):
    model, steps = FakeEps(), []
    cond = {"context": golden["prompt_embeds"], "fps": 8, "timestep_cond": golden["w_embedding"]}
    if generator is None:
        torch.manual_seed(1234)
    output = sample_consistency(
        model,
        golden["x_T"] if x_T is None else x_T,
        cond,
        num_steps=num_steps,
        generator=generator,
        callback=steps.append,
    )
    return output, steps, model


@pytest.mark.parametrize("num_steps", [4, 8])
def test_every_step_matches_the_official_trajectory(golden_dir, num_steps):
    golden = load(golden_dir, num_steps)
    output, steps, model = run_golden(golden, num_steps)

    assert [s.step for s in steps] == list(range(num_steps))
    assert all(isinstance(s, ConsistencyStep) and s.num_steps == num_steps for s in steps)
    assert torch.equal(torch.stack([s.t[0] for s in steps]), golden["timesteps"])
    for i, step in enumerate(steps):
        assert torch.equal(step.t, golden[f"step{i}.t"])
        # The global-RNG replay reproduces the official draws exactly.
        assert torch.equal(step.noise, golden[f"step{i}.noise"]), f"step {i}: noise replay differs"
        for name in ("x_in", "eps", "denoised", "prev_sample"):
            torch.testing.assert_close(
                getattr(step, name), golden[f"step{i}.{name}"], atol=TRAJECTORY_ATOL, rtol=0, msg=f"step {i} {name}"
            )
        torch.testing.assert_close(step.c_skip.reshape(1), golden[f"step{i}.c_skip"], atol=0, rtol=1e-6)
        torch.testing.assert_close(step.c_out.reshape(1), golden[f"step{i}.c_out"], atol=0, rtol=1e-6)
    torch.testing.assert_close(output, golden["output"], atol=TRAJECTORY_ATOL, rtol=0)
    assert torch.equal(output, steps[-1].denoised)

    # The conditioning reaches the model untouched, once per step.
    assert len(model.calls) == num_steps
    assert all(call["context"] is golden["prompt_embeds"] and call["fps"] == 8 for call in model.calls)
    assert all(call["timestep_cond"] is golden["w_embedding"] for call in model.calls)
    torch.testing.assert_close(guidance_embedding_for(7.5, 2), golden["w_embedding"], atol=GUIDANCE_EMBEDDING_ATOL, rtol=0)


def test_a_seeded_generator_replays_the_same_noise_and_leaves_the_global_rng_alone(golden_dir):
    golden = load(golden_dir, 4)
    torch.manual_seed(99)
    global_state = torch.get_rng_state()
    output, steps, _ = run_golden(golden, 4, generator=torch.Generator().manual_seed(1234))
    assert torch.equal(torch.get_rng_state(), global_state)
    for i, step in enumerate(steps):
        assert torch.equal(step.noise, golden[f"step{i}.noise"])
    torch.testing.assert_close(output, golden["output"], atol=TRAJECTORY_ATOL, rtol=0)


def test_float64_latents_update_in_float64_with_the_same_noise(golden_dir):
    golden = load(golden_dir, 4)
    output, steps, model = run_golden(golden, 4, x_T=golden["x_T"].double())
    assert output.dtype == torch.float64 and all(call["dtype"] == torch.float64 for call in model.calls)
    assert torch.equal(steps[0].noise.float(), golden["step0.noise"])
    torch.testing.assert_close(output.float(), golden["output"], atol=TRAJECTORY_ATOL, rtol=0)


def test_half_precision_latents_stay_in_their_dtype_but_update_in_float32(golden_dir):
    golden = load(golden_dir, 4)
    output, steps, model = run_golden(golden, 4, x_T=golden["x_T"].to(torch.bfloat16))
    assert output.dtype == torch.bfloat16
    assert all(call["dtype"] == torch.bfloat16 for call in model.calls)
    assert all(s.denoised.dtype == torch.float32 and s.x_in.dtype == torch.bfloat16 for s in steps)
    # bfloat16 keeps ~3 significant digits; the trajectory must still follow the float32 one.
    error = (output.float() - golden["output"]).abs().max().item()
    assert error < 0.05 * golden["output"].abs().max().item()
