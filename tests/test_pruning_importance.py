"""Block importance: the skip definition, the scores, and the budgeted layout search."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pruning.importance import (
    BlockScore,
    Budget,
    describe_blocks,
    guided_prediction,
    make_calibration_batch,
    measure_layout,
    measured_prediction,
    propose_layout,
    score_blocks,
    skipped,
    spread_timesteps,
)
from hummingbird_t2v.pruning.layouts import check_layout, full_layout, paper_layout
from hummingbird_t2v.pruning.report import block_costs, unet_cost
from hummingbird_t2v.pruning.transfer import prune_unet

# Two levels (32 and 64 wide), attention only at level 0: a teacher that runs in milliseconds.
MICRO = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), num_head_channels=16, context_dim=16)


def _perturbed(config: UNetConfig, seed: int = 0) -> UNet3D:
    """Default init plus noise on every tensor, so that zero-initialised output layers are not zero
    (a fresh U-Net's blocks are identities, which would make every score 0)."""
    torch.manual_seed(seed)
    model = UNet3D(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch(config: UNetConfig, samples: int = 2, size=(2, 8, 8), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(samples, config.in_channels, *size, generator=g)
    context = torch.randn(samples, 5, config.context_dim, generator=g)
    uncond = torch.randn(1, 5, config.context_dim, generator=g)
    return make_calibration_batch(latents, context, uncond, seed=seed)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are so small that a second thread only adds synchronisation (and on a busy machine
    # an oversubscribed OpenMP pool makes them ten times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def micro() -> UNet3D:
    return _perturbed(MICRO)


@pytest.fixture(scope="module")
def costs():
    return block_costs(MICRO)


def test_which_units_can_be_skipped():
    info = {b.name: b for b in describe_blocks(MICRO)}
    skippable = sorted(name for name, b in info.items() if b.skippable)
    assert sorted(info) == sorted(
        ["input_blocks.1", "input_blocks.2", "input_blocks.4", "input_blocks.5", "middle_block"]
        + [f"output_blocks.{i}" for i in range(6)]
    )
    # The level-1 entry block widens 32 -> 64; the first level-0 decoder unit narrows 64 -> 32.
    assert set(info) - set(skippable) == {"input_blocks.4", "output_blocks.3"}
    assert "32→64" in info["input_blocks.4"].reason


def test_skipping_units_gives_exactly_the_pruned_student(golden_dir):
    # Skipping teacher input blocks 2, 5, 8, 11 and output blocks 0, 3, 7, 10 is the hb-0.9b student.
    config = get_unet_preset("tiny-vc2")
    teacher = UNet3D(config).eval()
    teacher.load_state_dict({k: v.float() for k, v in load_file(golden_dir / "tiny_vc2_unet.safetensors").items()})
    batch = _batch(config, samples=1, size=(2, 8, 8))
    batch = dataclasses.replace(batch, context=torch.randn(1, 5, 32), uncond_context=torch.randn(1, 5, 32))
    dropped = ["input_blocks.2", "input_blocks.5", "input_blocks.8", "input_blocks.11"]
    dropped += ["output_blocks.0", "output_blocks.3", "output_blocks.7", "output_blocks.10"]
    with skipped(teacher, dropped):
        skipped_output = guided_prediction(teacher, batch, 12.0)
    student = prune_unet(teacher.state_dict(), config, paper_layout("hb-0.9b").replace(time_cond_proj_dim=None))
    torch.testing.assert_close(guided_prediction(student.unet, batch, 12.0), skipped_output, rtol=1e-5, atol=1e-5)
    # ... and the teacher is whole again afterwards.
    assert all(type(stage).__name__ == "UNetStage" for stage in teacher.output_blocks)


def test_scores_rank_every_unit_and_leave_the_teacher_unchanged(micro, costs):
    batch = _batch(MICRO)
    before = guided_prediction(micro, batch, 12.0)
    scores = score_blocks(micro, batch, costs)
    assert len(scores) == len(describe_blocks(MICRO))
    values = [s.score for s in scores if s.score is not None]
    assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
    assert [s.block.name for s in scores[-2:]] == ["input_blocks.4", "output_blocks.3"]  # unskippable last
    torch.testing.assert_close(guided_prediction(micro, batch, 12.0), before, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="cannot be skipped"), skipped(micro, ["input_blocks.4"]):
        pass


def test_caption_scores_measure_the_change_of_the_caption_part_alone(micro, costs):
    batch = _batch(MICRO)
    x = batch.noisy_latents.repeat(2, 1, 1, 1, 1)
    context = torch.cat([batch.context, batch.uncond_context])
    with torch.no_grad():
        cond, uncond = micro(x, batch.timesteps.repeat(2), context, fps=batch.fps.repeat(2)).chunk(2)
    torch.testing.assert_close(measured_prediction(micro, batch, 12.0, "caption"), cond - uncond, rtol=1e-6, atol=1e-6)

    caption = {s.block.name: s.score for s in score_blocks(micro, batch, costs, target="caption")}
    guided = {s.block.name: s.score for s in score_blocks(micro, batch, costs, target="guided")}
    with skipped(micro, ["output_blocks.4"]):
        skipped_part = measured_prediction(micro, batch, 12.0, "caption")
    expected = float(((skipped_part - (cond - uncond)) ** 2).mean() / ((cond - uncond) ** 2).mean())
    assert caption["output_blocks.4"] == pytest.approx(expected, rel=1e-5)
    # A different quantity: the guided prediction also holds everything the caption does not decide.
    assert caption["output_blocks.4"] != pytest.approx(guided["output_blocks.4"], rel=1e-3)
    full = full_layout(MICRO)
    assert measure_layout(micro, full, batch, target="caption") == 0.0
    with pytest.raises(ConfigError, match="unknown score target 'colour'"):
        measured_prediction(micro, batch, 12.0, "colour")


def _synthetic_scores(config: UNetConfig, costs, values: dict[str, float]) -> list[BlockScore]:
    return [
        BlockScore(b, costs.blocks[b.name], values.get(b.name, 1.0) if b.skippable else None) for b in describe_blocks(config)
    ]


def test_proposal_leaves_out_the_least_important_units_within_the_budget(costs):
    halved = unet_cost(MICRO.replace(num_res_blocks=1))
    # Level 0: the first encoder unit and the middle decoder unit matter least; level 1: its second encoder
    # unit and second decoder unit (its last decoder unit is the only one that takes the 32-wide skip).
    scores = _synthetic_scores(MICRO, costs, {"input_blocks.1": 0.01, "output_blocks.4": 0.02, "input_blocks.5": 0.03, "output_blocks.1": 0.01})
    proposal = propose_layout(MICRO, scores, costs.total, Budget("params", halved.params))
    check_layout(MICRO, proposal.layout)
    assert proposal.layout.encoder == ((1,), (0,)) and proposal.layout.decoder == ((0, 2), (0, 2))
    assert proposal.layout.middle_block
    assert sorted(proposal.removed) == ["input_blocks.1", "input_blocks.5", "output_blocks.1", "output_blocks.4"]
    assert proposal.removed_score == pytest.approx(0.07)
    # The predicted cost is the real cost of the student it describes.
    assert proposal.cost == unet_cost(proposal.layout.student_config(MICRO))
    assert proposal.cost.params <= halved.params


def test_a_cheap_middle_block_goes_first_and_can_be_protected(costs):
    scores = _synthetic_scores(MICRO, costs, {"middle_block": 0.001})
    budget = Budget("params", costs.total.params - costs.blocks["middle_block"].params)
    assert not propose_layout(MICRO, scores, costs.total, budget).layout.middle_block
    kept = propose_layout(MICRO, scores, costs.total, budget, allow_dropping_middle=False)
    assert kept.layout.middle_block and kept.cost.params <= budget.limit


def test_flop_budget_and_guidance_projection_are_accounted_for(costs):
    scores = _synthetic_scores(MICRO, costs, {})
    budget = Budget("flops", int(costs.total.flops * 0.8))
    proposal = propose_layout(MICRO, scores, costs.total, budget, time_cond_proj_dim=64)
    assert proposal.layout.time_cond_proj_dim == 64
    assert proposal.cost == unet_cost(proposal.layout.student_config(MICRO))
    assert proposal.cost.flops <= budget.limit


def test_an_impossible_budget_says_how_small_the_teacher_can_get(costs):
    with pytest.raises(ConfigError, match=r"no layout fits a params budget of 1,000: the smallest .* has [\d,]+ params"):
        propose_layout(MICRO, _synthetic_scores(MICRO, costs, {}), costs.total, Budget("params", 1000))


def test_measured_change_is_zero_for_the_identity_layout_and_positive_otherwise(micro):
    batch = _batch(MICRO)
    assert measure_layout(micro, full_layout(MICRO), batch) == 0.0
    smaller = full_layout(MICRO).replace(encoder=((0,), (0,)), decoder=((0, 2), (1, 2)))
    assert measure_layout(micro, smaller, batch) > 0.0


def test_calibration_batch_covers_the_noise_levels():
    assert spread_timesteps(4).tolist() == [875, 625, 375, 125]
    batch = _batch(MICRO, samples=4)
    assert batch.timesteps.tolist() == [875, 625, 375, 125]
    assert batch.uncond_context.shape == batch.context.shape
    assert batch.fps.tolist() == [8] * 4
    with pytest.raises(ConfigError, match="uncond_context"):
        make_calibration_batch(torch.zeros(2, 4, 1, 8, 8), torch.zeros(2, 5, 16), torch.zeros(2, 6, 16))
