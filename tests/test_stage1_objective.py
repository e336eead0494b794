"""Stage-1 distillation objective: the official loss on the golden step, and what it trains and saves."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import FirstChannelDecoder, MeanFrameReward

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pipelines.config import TEACHER_DEFAULTS
from hummingbird_t2v.training.objective import TrainBatch, swap_captions
from hummingbird_t2v.training.objectives import parse_objective_settings
from hummingbird_t2v.training.objectives.distill import (
    Stage1DistillObjective,
    Stage1Settings,
    level_output_modules,
)
from hummingbird_t2v.training.objectives.reward_terms import (
    RewardTerm,
    build_reward_terms,
)

MICRO = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), num_head_channels=16, context_dim=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: a second thread only adds synchronisation, and oversubscribes a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturbed(config: UNetConfig, seed: int) -> UNet3D:
    torch.manual_seed(seed)
    model = UNet3D(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _pair(**settings) -> Stage1DistillObjective:
    teacher = _perturbed(MICRO, 0)
    student = _perturbed(MICRO.replace(num_res_blocks=1), 1)
    return Stage1DistillObjective(student, teacher, Stage1Settings(**settings))


def _batch(seed: int = 0, samples: int = 2) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    return TrainBatch(
        latents=torch.randn(samples, 4, 2, 8, 8, generator=g),
        context=torch.randn(samples, 5, 16, generator=g),
        uncond_context=torch.randn(1, 5, 16, generator=g).expand(samples, -1, -1),
        fps=torch.full((samples,), 8, dtype=torch.long),
    )


@torch.no_grad()
def test_reproduces_the_official_stage1_step(golden_dir):
    golden = {k: v.clone() for k, v in load_file(golden_dir / "stage1_step_tiny.safetensors").items()}
    teacher = UNet3D(get_unet_preset("tiny-vc2"))
    teacher.load_state_dict({k: v.float() for k, v in load_file(golden_dir / "tiny_vc2_unet.safetensors").items()})
    # Stage 1 has no guidance projection: the golden student is tiny_hb09 without time_cond_proj.
    student_weights = load_file(golden_dir / "tiny_hb09_unet.safetensors")
    student = UNet3D(get_unet_preset("tiny-hb-0.9b").replace(time_cond_proj_dim=None))
    student.load_state_dict({k: v.float() for k, v in student_weights.items() if k != "time_cond_proj.weight"})

    objective = Stage1DistillObjective(student, teacher).eval()
    batch = TrainBatch(golden["z0"], golden["cond_context"], golden["uncond_context"], golden["fps"])
    terms = objective.compute(batch, golden["t"], golden["noise"])

    torch.testing.assert_close(terms.scale, golden["scale_t"], rtol=0, atol=1e-7)
    torch.testing.assert_close(terms.z_t, golden["z_t"], rtol=0, atol=1e-6)
    torch.testing.assert_close(terms.teacher_eps_cond, golden["teacher_eps_cond"], rtol=0, atol=1e-4)
    torch.testing.assert_close(terms.teacher_eps_uncond, golden["teacher_eps_uncond"], rtol=0, atol=1e-4)
    own = terms.teacher_eps_uncond + 12 * (terms.teacher_eps_cond - terms.teacher_eps_uncond)
    torch.testing.assert_close(terms.target, own, rtol=0, atol=1e-6)
    torch.testing.assert_close(terms.target, golden["target"], rtol=0, atol=1e-3)
    torch.testing.assert_close(terms.student_eps, golden["student_eps"], rtol=0, atol=1e-4)
    torch.testing.assert_close(terms.loss, golden["loss"], rtol=1e-4, atol=0)
    assert terms.feature_loss is None and terms.data_loss is None


def test_only_the_student_is_trained_and_saved():
    objective = _pair()
    objective.train()
    output = objective(_batch(), torch.Generator().manual_seed(0))
    output.loss.backward()
    student = objective.trainable_module()
    assert student is objective.model
    assert all(p.grad is not None for p in student.parameters())
    assert all(not p.requires_grad and p.grad is None for p in objective.teacher.parameters())
    # The teacher is invisible to state_dict(), parameters() and therefore to optimizers, DDP and checkpoints.
    assert set(objective.state_dict()) == {f"model.{k}" for k in student.state_dict()}
    assert {id(p) for p in objective.parameters()} == {id(p) for p in student.parameters()}
    assert "loss_distill" in output.logs


def test_teacher_stays_in_eval_mode_unless_its_dropout_is_asked_for():
    objective = _pair()
    objective.train()
    assert objective.model.training and not objective.teacher.training
    objective.eval()
    assert not objective.model.training
    noisy = _pair(teacher_dropout=True).train()
    assert noisy.teacher.training


def test_same_generator_same_loss_and_the_teacher_follows_the_student_device():
    objective = _pair().eval()  # eval: the student's own dropout would draw from the global RNG
    first = objective(_batch(), torch.Generator().manual_seed(5)).loss
    again = objective(_batch(), torch.Generator().manual_seed(5)).loss
    other = objective(_batch(), torch.Generator().manual_seed(6)).loss
    assert torch.equal(first, again) and not torch.equal(first, other)
    objective.to("meta")  # any .to() reaches the unregistered teacher too
    assert next(objective.teacher.parameters()).is_meta


@torch.no_grad()
def test_swapped_captions_come_from_other_clips_and_the_target_follows_them():
    objective = _pair(caption_swap_probability=1.0).eval()
    batch = replace(_batch(samples=4), captions=["a", "b", "c", "d"])
    swapped = swap_captions(batch, 1.0, torch.Generator().manual_seed(0))
    # Every clip takes another clip's caption (embedding and text together); the clips stay.
    sources = [batch.captions.index(c) for c in swapped.captions]
    assert all(source != own for own, source in enumerate(sources))
    assert torch.equal(swapped.context, batch.context[sources]) and swapped.latents is batch.latents
    # The loss is the plain stage-1 loss of the swapped batch: same timesteps and noise, other captions.
    generator = torch.Generator().manual_seed(3)
    loss = objective(batch, generator).loss
    replay = torch.Generator().manual_seed(3)
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    expected = objective.compute(swap_captions(batch, 1.0, replay), t, noise).loss
    assert torch.equal(loss, expected)
    assert not torch.equal(loss, objective.compute(batch, t, noise).loss)
    # Off (the default) draws nothing more, so earlier runs replay exactly.
    assert swap_captions(batch, 0.0, generator) is batch
    with pytest.raises(ConfigError, match=r"caption_swap_probability must lie in \[0, 1\]"):
        Stage1Settings(caption_swap_probability=1.5)


def test_low_precision_teacher_gives_nearly_the_same_loss():
    t = torch.tensor([900, 300])
    noise = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = _pair().compute(_batch(), t, noise)
        low = _pair(teacher_dtype="bf16").compute(_batch(), t, noise)
    assert low.target.dtype == torch.float32
    assert {p.dtype for p in _pair(teacher_dtype="bf16").teacher.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(low.loss, full.loss, rtol=0.05, atol=0)


def test_optional_terms_are_off_by_default_and_add_up_when_on():
    t = torch.tensor([999, 10])
    noise = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        terms = _pair(feature_loss_weight=0.5, data_loss_weight=0.25).compute(_batch(), t, noise)
    assert terms.feature_loss > 0 and terms.data_loss > 0
    torch.testing.assert_close(terms.data_loss, ((terms.student_eps - noise) ** 2).mean())
    torch.testing.assert_close(terms.loss, terms.distill_loss + 0.5 * terms.feature_loss + 0.25 * terms.data_loss)


def test_feature_loss_pairs_level_outputs_and_vanishes_for_a_copy_of_the_teacher():
    teacher = _perturbed(MICRO, 0)
    objective = Stage1DistillObjective(copy.deepcopy(teacher), teacher, Stage1Settings(feature_loss_weight=1.0)).eval()
    assert level_output_modules(MICRO) == ["input_blocks.2", "input_blocks.5", "middle_block", "output_blocks.2", "output_blocks.5"]
    with torch.no_grad():
        terms = objective.compute(_batch(), torch.tensor([500, 20]), torch.randn(2, 4, 2, 8, 8))
    assert terms.feature_loss < 1e-10  # same network, same input: only the guidance term differs
    assert terms.distill_loss > 1e-4
    student = MICRO.replace(num_res_blocks=1)
    pairs = Stage1DistillObjective(_perturbed(student, 1), teacher).feature_pairs
    assert pairs == [
        ("input_blocks.1", "input_blocks.2"), ("input_blocks.3", "input_blocks.5"),
        ("output_blocks.1", "output_blocks.2"), ("output_blocks.3", "output_blocks.5"), ("middle_block", "middle_block"),
    ]


def test_exported_student_samples_with_ddim_and_no_cfg():
    config = _pair().pipeline_config(TEACHER_DEFAULTS)
    assert config.sampler == "ddim" and config.defaults.guidance_scale == 1.0
    assert config.use_scale and config.scale_b == 0.7


def test_mismatched_or_guided_networks_are_refused():
    teacher = _perturbed(MICRO, 0)
    with pytest.raises(ConfigError, match="--no-guidance-projection"):
        Stage1DistillObjective(UNet3D(MICRO.replace(num_res_blocks=1, time_cond_proj_dim=32)), teacher)
    with pytest.raises(ConfigError, match="not pruned from this teacher.*context_dim"):
        Stage1DistillObjective(UNet3D(MICRO.replace(num_res_blocks=1, context_dim=32)), teacher)
    with pytest.raises(ConfigError, match="teacher_dtype"):
        Stage1Settings(teacher_dtype="int8")


def test_rewards_score_the_students_clean_prediction_of_the_clips_in_range():
    reward, decoder = MeanFrameReward(), FirstChannelDecoder()
    teacher = _perturbed(MICRO, 0)
    student = _perturbed(MICRO.replace(num_res_blocks=1), 1)
    settings = Stage1Settings(reward_timestep_range=(600, 999))  # with VC2's latent rescale (the default)
    objective = Stage1DistillObjective(student, teacher, settings, rewards=[RewardTerm(reward, 2.0, name="mean")], vae=decoder)
    batch = replace(_batch(samples=3), captions=["a", "b", "c"])
    t = torch.tensor([900, 300, 650])
    noise = torch.randn(3, 4, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    terms = objective.compute(batch, t, noise)

    chosen = torch.tensor([0, 2])  # t = 300 lies outside the range
    alpha_bar = objective.sqrt_alphas_cumprod[t[chosen]].pow(2).view(-1, 1, 1, 1, 1)
    x0 = (terms.z_t[chosen] - (1 - alpha_bar).sqrt() * terms.student_eps[chosen]) / alpha_bar.sqrt()
    x0 = x0 / terms.scale[chosen].view(-1, 1, 1, 1, 1)
    frames, prompts = reward.calls[0]
    assert prompts == ["a", "c"] and frames.shape == (2, 2, 3, 8, 8)
    torch.testing.assert_close(frames, (x0[:, :1] / 2 + 0.5).clamp(0, 1).expand(-1, 3, -1, -1, -1).transpose(1, 2))
    torch.testing.assert_close(terms.reward_loss, -2.0 * frames.mean())
    torch.testing.assert_close(terms.loss, terms.distill_loss + terms.reward_loss)
    assert set(terms.reward_logs) == {"reward_mean"}

    terms.loss.backward()
    assert all(p.grad is not None for p in student.parameters()) and decoder.gain.grad is None
    objective.train()
    assert objective.model.training and not decoder.training
    # Checkpoints still hold the student alone: the VAE and reward models are not trained or saved by the loop,
    # which saves objective.trainable_module().
    assert objective.trainable_module() is student

    no_clip_in_range = objective.compute(batch, torch.tensor([10, 20, 30]), noise)
    assert no_clip_in_range.reward_loss is None and no_clip_in_range.reward_logs == {}
    torch.testing.assert_close(no_clip_in_range.loss, no_clip_in_range.distill_loss)


def test_reward_swapped_clips_false_skips_the_clips_under_another_caption():
    teacher = _perturbed(MICRO, 0)
    student = _perturbed(MICRO.replace(num_res_blocks=1), 1)
    for reward_swapped, expected in ((True, ["b", "a", "c"]), (False, ["c"])):
        reward = MeanFrameReward()
        settings = Stage1Settings(reward_swapped_clips=reward_swapped)
        objective = Stage1DistillObjective(student, teacher, settings, rewards=[RewardTerm(reward, 1.0)], vae=FirstChannelDecoder())
        # Clips 0 and 1 carry each other's caption.
        batch = replace(_batch(samples=3), captions=["b", "a", "c"], swapped=torch.tensor([True, True, False]))
        objective.compute(batch, torch.tensor([900, 300, 650]), torch.randn(3, 4, 2, 8, 8))
        assert reward.calls[0][1] == expected
        none_own = replace(batch, swapped=torch.tensor([True, True, True]))
        terms = objective.compute(none_own, torch.tensor([900, 300, 650]), torch.randn(3, 4, 2, 8, 8))
        assert (terms.reward_loss is None) == (not reward_swapped)


def test_reward_settings_and_wiring_errors():
    for bad in ((900, 800), (0, 1000), (5,)):
        with pytest.raises(ConfigError, match="reward_timestep_range"):
            Stage1Settings(reward_timestep_range=bad)
    teacher = _perturbed(MICRO, 0)
    student = _perturbed(MICRO.replace(num_res_blocks=1), 1)
    with pytest.raises(ConfigError, match="VAE"):
        Stage1DistillObjective(student, teacher, rewards=[RewardTerm(MeanFrameReward(), 1.0)])
    objective = Stage1DistillObjective(student, teacher, rewards=[RewardTerm(MeanFrameReward(), 1.0)], vae=FirstChannelDecoder())
    with pytest.raises(ConfigError, match="captions"):
        objective.compute(_batch(), torch.tensor([900, 300]), torch.randn(2, 4, 2, 8, 8))


def test_distill_config_builds_reward_terms_by_name():
    _spec, settings = parse_objective_settings(
        {
            "name": "distill",
            "layout": "hb-0.9b",
            "rewards": [{"name": "toy", "options": {"attributes": ["color"], "mode": "log_prob"}}],
            "reward_timestep_range": [400, 999],
        }
    )
    assert settings.reward_timestep_range == (400, 999)
    assert settings.loss_settings().rewards == settings.rewards
    (term,) = build_reward_terms(settings.rewards)
    assert term.name == "toy" and term.weight == 1.0
