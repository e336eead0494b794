"""The training foundation: config, data shards, the diffusion objective, EMA, checkpoints, a short run."""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from training_helpers import FirstChannelDecoder, MeanFrameReward

from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.data.manifest import DatasetError
from hummingbird_t2v.data.video_io import VideoDecodeError, read_video, write_video
from hummingbird_t2v.diffusion.ddim import sample_ddim_cfg
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder, TextEncoderConfig
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pipelines.config import SamplingDefaults
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.rewards import ToyMotionReward
from hummingbird_t2v.training import checkpointing as ckpt
from hummingbird_t2v.training.components import build_from_spec, check_compatible
from hummingbird_t2v.training.config import (
    ComponentSpec,
    DataConfig,
    OptimConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)
from hummingbird_t2v.training.data import (
    MapSource,
    ShardedBatches,
    batch_loader,
    build_source,
)
from hummingbird_t2v.training.ema import EMAModel
from hummingbird_t2v.training.logging import MetricsLogger
from hummingbird_t2v.training.loop import Trainer, lr_multiplier
from hummingbird_t2v.training.objective import TrainBatch
from hummingbird_t2v.training.objectives import (
    ObjectiveSpec,
    get_objective,
    parse_objective_settings,
    register_objective,
)
from hummingbird_t2v.training.objectives.diffusion import (
    DiffusionObjective,
    DiffusionSettings,
    frame_pyramid_noise,
)
from hummingbird_t2v.training.objectives.reward_terms import (
    RewardTerm,
    build_reward_terms,
)

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny_test.yaml"


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- config


def test_config_yaml_overrides_types_and_roundtrip():
    config = load_config(
        TINY_CONFIG,
        [
            "optim.lr=1e-4",
            "model.unet.config.model_channels=64",
            "sample.prompts=[a b, c]",
            "run.cpu_threads=1",
        ],
    )
    assert config.optim.lr == pytest.approx(1e-4) and isinstance(config.optim.lr, float)  # "1e-4" is a YAML string
    assert config.model.unet.config["model_channels"] == 64
    assert config.model.unet.config["channel_mult"] == [
        1,
        2,
    ]  # the rest of the mapping is kept
    assert config.sample.prompts == ["a b", "c"]
    assert config.optim.betas == (0.9, 0.999)
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.learning_rate=1", "optim.learning_rate"),
        ("run.max_steps=abc", "run.max_steps must be an integer"),
        ("run.mixed_precision=fp8", "run.mixed_precision must be one of"),
        ("optim.lr", "KEY=VALUE"),
        ("optim.lr.x=1", "is a value, not a section"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_CONFIG, [override])


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_toy_teacher_config_is_teacher_structured():
    config = load_config(TINY_CONFIG.parent / "toy_teacher.yaml")
    unet = UNetConfig.from_dict({**get_unet_preset(config.model.unet.preset).to_dict(), **config.model.unet.config})
    assert unet.num_res_blocks == 2 and unet.use_middle_block and unet.time_cond_proj_dim is None
    assert 1 not in unet.attention_resolutions  # attention only at the lower resolutions
    assert 32 <= unet.model_channels <= 64
    # The U-Net cross-attends to the shipped toy text encoder named by the config.
    assert config.model.text_encoder.class_name == "WordTextEncoder"
    encoder = json.loads((REPO / config.model.text_encoder.path / "config.json").read_text())
    assert unet.context_dim == encoder["width"] == 128
    assert (REPO / config.model.vae.path / "model.safetensors").is_file()
    spec, settings = parse_objective_settings(config.objective)
    assert spec.command == "base" and settings.latent_rescale is False


def test_lr_schedule_warmup_cosine_and_constant():
    cosine = OptimConfig(schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_multiplier(s, cosine, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_multiplier(4, cosine, 20) == pytest.approx(1.0)
    assert lr_multiplier(12, cosine, 20) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(20, cosine, 20) == pytest.approx(0.1)
    constant = OptimConfig(schedule="constant", warmup_steps=0)
    assert {lr_multiplier(s, constant, 20) for s in range(25)} == {1.0}


# ----------------------------------------------------------------------------- data


class _IndexedClips:
    """Map-style stand-in: clip i is a constant video of value i; `bad` indices fail to decode."""

    def __init__(self, size: int, bad: set[int] = frozenset()) -> None:
        self.size = size
        self.bad = bad

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if index in self.bad:
            raise VideoDecodeError(f"clip{index}.mp4: corrupt video stream")
        return {
            "video": torch.full((3, 2, 4, 4), float(index)),
            "caption": f"c{index}",
            "fps": 8,
            "path": f"clip{index}",
        }


class _FailingSource(MapSource):
    failures = (VideoDecodeError,)


def _paths(batches: ShardedBatches, first: int, count: int) -> list[str]:
    return [p for n in range(first, first + count) for p in batches[n]["path"]]


def test_ranks_read_disjoint_shards_and_the_stream_is_a_function_of_position():
    source = MapSource(_IndexedClips(11))
    ranks = [ShardedBatches(source, 1, rank=r, world_size=2, shuffle_seed=3) for r in range(2)]
    assert ranks[0].shard_size == 5  # 11 clips over 2 ranks: equal shards, the odd one out waits for the next epoch
    epoch0 = [set(_paths(b, 0, 5)) for b in ranks]
    assert not epoch0[0] & epoch0[1] and len(epoch0[0] | epoch0[1]) == 10
    epoch1 = [_paths(b, 5, 5) for b in ranks]
    assert not set(epoch1[0]) & set(epoch1[1])
    assert epoch1[0] != _paths(ranks[0], 0, 5)  # a new shuffle each epoch
    # Batch n is the same whenever it is read; a loader started at n continues the same stream.
    again = ShardedBatches(source, 1, rank=0, world_size=2, shuffle_seed=3)
    assert _paths(again, 7, 1) == _paths(ranks[0], 7, 1)
    stream = batch_loader(ShardedBatches(source, 2, rank=1, world_size=2, shuffle_seed=3), start=3)
    first = next(stream)
    assert first["path"] == ShardedBatches(source, 2, rank=1, world_size=2, shuffle_seed=3)[3]["path"]
    assert first["video"].shape == (2, 3, 2, 4, 4) and first["fps"].dtype == torch.long


def test_unusable_clips_are_replaced_counted_and_a_broken_dataset_stops():
    source = _FailingSource(_IndexedClips(8, bad={1, 2, 5}))
    batches = ShardedBatches(source, 4, world_size=1, shuffle_seed=0, max_consecutive_failures=4)
    seen, skipped = [], []
    for n in range(2):
        batch = batches[n]
        assert len(batch["path"]) == 4
        seen += batch["path"]
        skipped += batch["skipped"]
    assert not {"clip1", "clip2", "clip5"} & set(seen)
    assert skipped and all("corrupt video stream" in s for s in skipped)
    broken = ShardedBatches(
        _FailingSource(_IndexedClips(4, bad={0, 1, 2, 3})),
        1,
        max_consecutive_failures=3,
    )
    with pytest.raises(DatasetError, match="3 clips in a row"):
        broken[0]


def test_video_files_source_skips_a_corrupt_file(tmp_path):
    rows = []
    for i in range(3):
        frames = np.full((6, 32, 32, 3), 40 * i, dtype=np.uint8)
        write_video(tmp_path / f"v{i}.mp4", frames, fps=8)
        rows.append((f"v{i}.mp4", f"clip {i}"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    rows.append(("broken.mp4", "broken"))
    with (tmp_path / "clips.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("path", "text"), *rows])
    config = DataConfig(
        kind="videos",
        source=str(tmp_path / "clips.csv"),
        video_length=4,
        height=32,
        width=32,
    )
    batches = ShardedBatches(build_source(config), 4, max_consecutive_failures=4)
    batch = batches[0]
    assert batch["video"].shape == (4, 3, 4, 32, 32)
    assert "broken" not in " ".join(batch["caption"])
    assert len(batch["skipped"]) >= 1 and "broken.mp4" in batch["skipped"][0]
    assert batch["fps"].tolist() == [8, 8, 8, 8]


def test_toyworld_source_needs_a_size():
    with pytest.raises(ConfigError, match="data.toyworld.size"):
        build_source(
            DataConfig(
                kind="toyworld",
                video_length=2,
                height=16,
                width=16,
                toyworld={"seed": 0},
            )
        )


# ----------------------------------------------------------------------------- objective


class _Recorder(nn.Module):
    """Predicts zero noise and remembers its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, context, fps=None):
        self.calls.append((x.detach().clone(), t.clone(), context.detach().clone(), fps))
        return torch.zeros_like(x) + self.weight


def _batch(b=4):
    torch.manual_seed(0)
    return TrainBatch(
        latents=torch.randn(b, 4, 2, 3, 3),
        context=torch.randn(b, 5, 6),
        uncond_context=torch.zeros(b, 5, 6),
        fps=torch.full((b,), 8, dtype=torch.long),
    )


@pytest.mark.parametrize("rescale", [False, True])
def test_diffusion_objective_noises_latents_and_regresses_the_noise(rescale):
    model = _Recorder()
    objective = DiffusionObjective(model, DiffusionSettings(prompt_dropout=0.5, latent_rescale=rescale))
    batch = _batch()
    output = objective(batch, torch.Generator().manual_seed(7))

    replay = torch.Generator().manual_seed(7)  # the objective draws t, noise, dropout in this order
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    drop = torch.rand(4, generator=replay) < 0.5
    x, seen_t, context, fps = model.calls[0]
    alpha_bar = objective.alphas_cumprod[t].view(4, 1, 1, 1, 1)
    z0 = batch.latents
    if rescale:
        scale = torch.where(t < 400, 1.0 - 0.3 * t / 399.0, torch.full_like(t, 0.7, dtype=torch.float32))
        z0 = z0 * scale.view(4, 1, 1, 1, 1)
    torch.testing.assert_close(x, alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * noise)
    assert torch.equal(seen_t, t) and torch.equal(fps, batch.fps)
    for i in range(4):
        expected = batch.uncond_context[i] if drop[i] else batch.context[i]
        assert torch.equal(context[i], expected)
    torch.testing.assert_close(output.loss, noise.pow(2).mean())
    output.loss.backward()
    assert model.weight.grad is not None
    pipeline_config = objective.pipeline_config(SamplingDefaults(num_inference_steps=5, guidance_scale=3.0, fps=8))
    assert pipeline_config.sampler == "ddim" and pipeline_config.use_scale is rescale


def _loss_snr_and_clip_errors(settings: DiffusionSettings, seed: int = 3):
    """The objective's loss on a batch, and the SNR and per-clip squared noise of the steps it drew."""
    batch = _batch()
    objective = DiffusionObjective(_Recorder(), settings)
    loss = objective(batch, torch.Generator().manual_seed(seed)).loss
    replay = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    alpha_bar = objective.alphas_cumprod[t]
    return loss, alpha_bar / (1 - alpha_bar), noise.pow(2).flatten(1).mean(1)


def test_min_snr_weighting_scales_each_clip_by_min_snr_gamma_over_snr():
    loss, snr, clip_errors = _loss_snr_and_clip_errors(DiffusionSettings(min_snr_gamma=5.0))
    torch.testing.assert_close(loss, (torch.minimum(snr, torch.tensor(5.0)) / snr * clip_errors).mean())
    # Low-noise steps (SNR above gamma) are down-weighted, high-noise ones keep weight 1.
    assert snr.max() > 5 and loss < clip_errors.mean()
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        DiffusionSettings(min_snr_gamma=0.0)


def test_snr_floor_lifts_the_clean_latent_weight_of_the_noisiest_steps():
    loss, snr, clip_errors = _loss_snr_and_clip_errors(DiffusionSettings(min_snr_gamma=5.0, snr_floor=0.1))
    assert snr.min() < 0.1 and snr.max() > 5  # the batch has steps below the floor and above gamma
    clean_weight = torch.maximum(torch.minimum(snr, torch.tensor(5.0)), torch.tensor(0.1))
    torch.testing.assert_close(loss, (clean_weight / snr * clip_errors).mean())
    floor_only, snr, clip_errors = _loss_snr_and_clip_errors(DiffusionSettings(snr_floor=0.1))
    torch.testing.assert_close(floor_only, (snr.clamp(min=0.1) / snr * clip_errors).mean())
    # At t = 999 (SNR 0.0047) the eps error weighs 0.1 / SNR, about 21 times what Min-SNR alone gives it.
    alpha_bar = DiffusionObjective(_Recorder()).alphas_cumprod[999]
    assert 20 < float(0.1 * (1 - alpha_bar) / alpha_bar) < 23
    with pytest.raises(ConfigError, match="snr_floor"):
        DiffusionSettings(snr_floor=0.0)
    with pytest.raises(ConfigError, match="must not exceed"):
        DiffusionSettings(min_snr_gamma=5.0, snr_floor=6.0)


def test_timestep_range_draws_only_the_steps_asked_for():
    model = _Recorder()
    objective = DiffusionObjective(model, DiffusionSettings(timestep_range=(600, 999)))
    for seed in range(8):
        objective(_batch(), torch.Generator().manual_seed(seed))
    drawn = torch.cat([call[1] for call in model.calls])
    assert drawn.min() >= 600 and drawn.max() <= 999 and len(set(drawn.tolist())) > 20
    for bad in ((700, 600), (-1, 10), (0, 1000), (5,)):
        with pytest.raises(ConfigError, match="timestep_range"):
            DiffusionSettings(timestep_range=bad)


def test_rewards_score_the_one_step_clean_prediction_at_high_noise():
    model, reward, decoder = _Recorder(), MeanFrameReward(), FirstChannelDecoder()
    with torch.no_grad():
        model.weight.fill_(0.3)  # the recorder predicts eps = 0.3 everywhere
    settings = DiffusionSettings(prompt_dropout=1.0, reward_timestep_range=(900, 950))
    objective = DiffusionObjective(model, settings, rewards=[RewardTerm(reward, 2.0, name="mean")], vae=decoder)
    batch = replace(_batch(), captions=["a", "b", "c", "d"])
    output = objective(batch, torch.Generator().manual_seed(5))

    replay = torch.Generator().manual_seed(5)  # eps term: t, noise, dropout; then the reward's t and noise
    torch.randint(0, 1000, (4,), generator=replay)
    torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    t = torch.randint(900, 951, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    alpha_bar = objective.alphas_cumprod[t].view(4, 1, 1, 1, 1)
    z_t = alpha_bar.sqrt() * batch.latents + (1 - alpha_bar).sqrt() * noise
    x, seen_t, context, _ = model.calls[1]
    torch.testing.assert_close(x, z_t)
    assert torch.equal(seen_t, t)
    assert torch.equal(context, batch.context)  # the true caption: prompt dropout does not apply
    x0 = (z_t - (1 - alpha_bar).sqrt() * 0.3) / alpha_bar.sqrt()
    frames, prompts = reward.calls[0]
    assert prompts == batch.captions and frames.shape == (4, 2, 3, 3, 3)
    torch.testing.assert_close(frames, (x0[:, :1] / 2 + 0.5).clamp(0, 1).expand(-1, 3, -1, -1, -1).transpose(1, 2))
    assert set(output.logs) == {"loss_eps", "reward_mean"}
    torch.testing.assert_close(output.loss, output.logs["loss_eps"] - 2.0 * frames.mean())

    output.loss.backward()
    assert model.weight.grad is not None and decoder.gain.grad is None
    objective.train()
    assert not decoder.training and objective.model.training
    with pytest.raises(ConfigError, match="VAE"):
        DiffusionObjective(_Recorder(), settings, rewards=[RewardTerm(MeanFrameReward(), 1.0)])
    for bad in ((999, 800), (0, 1000)):
        with pytest.raises(ConfigError, match="reward_timestep_range"):
            DiffusionSettings(reward_timestep_range=bad)


class _ModeRecorder(_Recorder):
    """A `_Recorder` that also remembers whether it was in training mode at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.modes = []

    def forward(self, x, t, context, fps=None):
        self.modes.append(self.training)
        return super().forward(x, t, context, fps)


def test_sampled_reward_latents_come_from_the_models_own_sampler_stopped_in_range():
    settings = DiffusionSettings(
        reward_latents="sampled", reward_sampler_steps=10, reward_timestep_range=(700, 999), reward_guidance_scale=2.0
    )
    assert settings.reward_sampler_steps_in_range() == [0, 1, 2]  # the 10-step grid is 901, 801, 701, 601, ...
    model, reward = _ModeRecorder(), MeanFrameReward()
    objective = DiffusionObjective(model, settings, rewards=[RewardTerm(reward, 1.0)], vae=FirstChannelDecoder())
    batch = replace(_batch(), captions=["a", "b", "c", "d"])
    objective.train()(batch, torch.Generator().manual_seed(3))

    replay = torch.Generator().manual_seed(3)  # eps term: t, noise, dropout; then the step and x_T
    torch.randint(0, 1000, (4,), generator=replay)
    torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    step = [0, 1, 2][int(torch.randint(3, (1,), generator=replay))]
    x_T = torch.randn(batch.latents.shape, generator=replay)
    expected = sample_ddim_cfg(
        _Recorder(), x_T, {"context": batch.context, "fps": batch.fps}, {"context": batch.uncond_context},
        num_steps=10, eta=1.0, guidance_scale=2.0, use_scale=False, alphas_cumprod=objective.alphas_cumprod,
        generator=replay, stop_before_step=step,
    )
    assert len(model.calls) == 1 + 2 * step + 1  # the eps term, two passes per sampler step, the reward pass
    x, t, context, _ = model.calls[-1]
    torch.testing.assert_close(x, expected)
    assert torch.equal(t, torch.full((4,), [901, 801, 701][step])) and torch.equal(context, batch.context)
    assert model.modes == [True] + [False] * (2 * step) + [True]  # the sampler alone runs in eval mode
    with pytest.raises(ConfigError, match="no step"):
        DiffusionSettings(reward_latents="sampled", reward_sampler_steps=10, reward_timestep_range=(950, 999))
    with pytest.raises(ConfigError, match="reward_latents"):
        DiffusionSettings(reward_latents="bogus")


def test_diffusion_config_builds_reward_terms_by_name():
    _spec, settings = parse_objective_settings(
        {"name": "diffusion", "rewards": [{"name": "toy_motion", "weight": 0.01}], "reward_timestep_range": [700, 999]}
    )
    assert settings.reward_timestep_range == (700, 999)
    (term,) = build_reward_terms(settings.rewards)
    assert isinstance(term.model, ToyMotionReward) and term.weight == 0.01 and term.num_frames == 8


def test_offset_noise_adds_one_value_per_clip_and_channel():
    batch = _batch()
    model = _Recorder()
    objective = DiffusionObjective(model, DiffusionSettings(prompt_dropout=0.0, offset_noise=0.1))
    output = objective(batch, torch.Generator().manual_seed(4))
    replay = torch.Generator().manual_seed(4)  # t, noise, dropout, then the offset
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    noise = noise + 0.1 * torch.randn(4, 4, 1, 1, 1, generator=replay)
    alpha_bar = objective.alphas_cumprod[t].view(4, 1, 1, 1, 1)
    torch.testing.assert_close(model.calls[0][0], alpha_bar.sqrt() * batch.latents + (1 - alpha_bar).sqrt() * noise)
    torch.testing.assert_close(output.loss, noise.pow(2).mean())  # the target is the offset noise
    with pytest.raises(ConfigError, match="offset_noise"):
        DiffusionSettings(offset_noise=-0.1)


def test_frame_offset_noise_adds_one_value_per_clip_channel_and_frame():
    batch = _batch()
    model = _Recorder()
    settings = DiffusionSettings(prompt_dropout=0.0, offset_noise=0.1, frame_offset_noise=0.2)
    objective = DiffusionObjective(model, settings)
    output = objective(batch, torch.Generator().manual_seed(5))
    replay = torch.Generator().manual_seed(5)  # t, noise, dropout, the clip offset, then the frame offset
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    frames = batch.latents.shape[2]
    noise = noise + 0.1 * torch.randn(4, 4, 1, 1, 1, generator=replay)
    noise = noise + 0.2 * torch.randn(4, 4, frames, 1, 1, generator=replay)
    alpha_bar = objective.alphas_cumprod[t].view(4, 1, 1, 1, 1)
    torch.testing.assert_close(model.calls[0][0], alpha_bar.sqrt() * batch.latents + (1 - alpha_bar).sqrt() * noise)
    torch.testing.assert_close(output.loss, noise.pow(2).mean())
    with pytest.raises(ConfigError, match="frame_offset_noise"):
        DiffusionSettings(frame_offset_noise=-0.1)
    image_batch = replace(batch, latents=batch.latents[:, :, 0])
    with pytest.raises(ConfigError, match="frame_offset_noise needs video latents"):
        objective(image_batch, torch.Generator().manual_seed(5))


def test_frame_pyramid_noise_is_smooth_in_space_and_independent_across_frames():
    noise = frame_pyramid_noise((64, 4, 2, 16, 16), 0.8, generator=torch.Generator().manual_seed(0))
    first, second = noise[:, :, 0], noise[:, :, 1]
    # Coarse fields upsampled: neighbouring pixels of a frame move together (white noise: 0).
    neighbours = torch.corrcoef(torch.stack([first[..., :-1].flatten(), first[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.8
    # Drawn per frame: the same pixel of two frames does not (that is what hides a frame's layout).
    across = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]
    assert abs(across) < 0.05
    # Levels 8x8, 4x4 and 2x2 of a 16x16 latent, weighted 0.8, 0.64, 0.512: variance below their sum.
    assert 0.3 < noise.var() < 0.8**2 + 0.8**4 + 0.8**6
    assert torch.equal(frame_pyramid_noise((1, 4, 2, 3, 3), 0.8), torch.zeros(1, 4, 2, 3, 3))  # no level fits


def test_frame_pyramid_noise_joins_the_noise_the_objective_regresses():
    batch = replace(_batch(), latents=torch.randn(4, 4, 2, 8, 8))
    model = _Recorder()
    objective = DiffusionObjective(model, DiffusionSettings(prompt_dropout=0.0, frame_pyramid_noise=0.5))
    output = objective(batch, torch.Generator().manual_seed(6))
    replay = torch.Generator().manual_seed(6)  # t, noise, dropout, then the pyramid
    t = torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    noise = noise + frame_pyramid_noise(batch.latents.shape, 0.5, generator=replay)
    alpha_bar = objective.alphas_cumprod[t].view(4, 1, 1, 1, 1)
    torch.testing.assert_close(model.calls[0][0], alpha_bar.sqrt() * batch.latents + (1 - alpha_bar).sqrt() * noise)
    torch.testing.assert_close(output.loss, noise.pow(2).mean())
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="frame_pyramid_noise must lie in"):
            DiffusionSettings(frame_pyramid_noise=bad)
    image_batch = replace(batch, latents=batch.latents[:, :, 0])
    with pytest.raises(ConfigError, match="frame_pyramid_noise needs video latents"):
        objective(image_batch, torch.Generator().manual_seed(6))


def test_pure_noise_term_asks_for_the_clip_from_a_latent_that_holds_none():
    """The second model call sees fresh noise at t = T - 1 with the same captions; with eps = 0 its
    x̂₀ is noise / sqrt(ᾱ), and the term is the squared error of that against the clip."""
    batch = _batch()
    model = _Recorder()
    settings = DiffusionSettings(prompt_dropout=0.0, pure_noise_x0_weight=0.5)
    objective = DiffusionObjective(model, settings)
    output = objective(batch, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)  # t, noise, dropout, then the pure noise
    torch.randint(0, 1000, (4,), generator=replay)
    noise = torch.randn(batch.latents.shape, generator=replay)
    torch.rand(4, generator=replay)
    pure_noise = torch.randn(batch.latents.shape, generator=replay)
    (_, _t_eps, context_eps, _), (x, t, context, _) = model.calls
    torch.testing.assert_close(x, pure_noise)
    assert t.tolist() == [999] * 4
    torch.testing.assert_close(context, context_eps)
    first_step = (pure_noise / objective.alphas_cumprod[999].sqrt() - batch.latents).pow(2).mean()
    torch.testing.assert_close(output.logs["loss_pure_noise_x0"], first_step)
    torch.testing.assert_close(output.loss, noise.pow(2).mean() + 0.5 * first_step)
    output.loss.backward()
    assert model.weight.grad is not None and model.weight.grad != 0
    with pytest.raises(ConfigError, match="pure_noise_x0_weight"):
        DiffusionSettings(pure_noise_x0_weight=-1.0)


def test_prompt_dropout_extremes():
    batch = _batch()
    for p, expect_uncond in ((0.0, False), (1.0, True)):
        model = _Recorder()
        DiffusionObjective(model, DiffusionSettings(prompt_dropout=p))(batch, torch.Generator().manual_seed(1))
        expected = batch.uncond_context if expect_uncond else batch.context
        assert torch.equal(model.calls[0][2], expected)


def test_objective_registry_and_settings_validation():
    spec = get_objective("diffusion")
    assert spec.command == "base" and spec.settings_class is DiffusionSettings
    with pytest.raises(ConfigError, match="unknown objective 'nope'"):
        get_objective("nope")
    with pytest.raises(ConfigError, match="prompt_dropout"):
        DiffusionSettings(prompt_dropout=1.5)


# ----------------------------------------------------------------------------- EMA and checkpoint files


def test_ema_update_rule_and_warmup():
    live = nn.Linear(3, 2)
    ema = EMAModel(live, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    ema.update(live)
    for name, value in live.state_dict().items():
        torch.testing.assert_close(ema.state_dict()[name], 0.9 * before[name] + 0.1 * value)
    warm = EMAModel(live, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.num_updates = 10_000
    assert warm.current_decay() == pytest.approx(0.999)


def test_checkpoint_folders_commit_atomically_and_prune(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        staging = ckpt.prepare_staging(root, step)
        ckpt.write_state(staging, ckpt.CheckpointState(step=step, data_position=step, world_size=1))
        ckpt.commit_checkpoint(staging, keep=2)
    half = ckpt.prepare_staging(root, 8)  # a run killed while writing step 8
    ckpt.write_state(half, ckpt.CheckpointState(step=8, data_position=8, world_size=1))
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [4, 6]
    assert ckpt.latest_checkpoint(root).name == "step-00000006"
    assert ckpt.remove_stale_staging(root) == [half] and not half.exists()


def test_optimizer_and_rng_state_roundtrip(tmp_path):
    model = nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    ckpt.save_optimizer_state(tmp_path / "optimizer.pt", optimizer.state_dict())
    restored = torch.optim.AdamW(nn.Linear(4, 4).parameters(), lr=1e-2)
    restored.load_state_dict(ckpt.load_optimizer_state(tmp_path / "optimizer.pt"))
    for a, b in zip(optimizer.state.values(), restored.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))

    (tmp_path / "rng").mkdir()
    generator = torch.Generator().manual_seed(5)
    torch.rand(3, generator=generator)
    ckpt.save_rng_state(tmp_path, 0, generator)
    first = (
        torch.rand(3),
        random.random(),
        np.random.rand(),
        torch.rand(3, generator=generator),
    )
    torch.manual_seed(123), random.seed(1), np.random.seed(1), generator.manual_seed(9)
    assert ckpt.load_rng_state(tmp_path, 0, generator)
    second = (
        torch.rand(3),
        random.random(),
        np.random.rand(),
        torch.rand(3, generator=generator),
    )
    assert torch.equal(first[0], second[0]) and first[1:3] == second[1:3] and torch.equal(first[3], second[3])
    assert not ckpt.load_rng_state(tmp_path, 1, generator)

    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match="not a readable optimizer state"):
        ckpt.load_optimizer_state(tmp_path / "bad.pt")


def test_components_must_fit_each_other():
    unet = build_from_spec(ComponentSpec(preset="tiny-vc2", config={"context_dim": 64}), "unet")
    vae = build_from_spec(ComponentSpec(preset="tiny"), "vae")
    context = OpenCLIPTextEncoder(TextEncoderConfig.preset("tiny")).encode([""])
    with pytest.raises(ConfigError, match="context_dim=32"):
        check_compatible(unet, vae, context)
    with pytest.raises(ConfigError, match="registered component class"):
        build_from_spec(ComponentSpec(class_name="NoSuchModule", config={"a": 1}), "vae")
    with pytest.raises(ConfigError, match="does not exist"):
        build_from_spec(ComponentSpec(path="/no/such/folder"), "vae")


@pytest.mark.parametrize("module", ["frame_position_embedding", "frame_caption_embedding", "spatiotemporal_conv"])
def test_a_loaded_unet_can_gain_an_identity_module_and_nothing_else(tmp_path, module):
    from hummingbird_t2v.checkpoints.folder import save_component

    unet = build_from_spec(ComponentSpec(preset="tiny-vc2"), "unet")
    save_component(tmp_path / "unet", unet, unet.config.to_dict())
    spec = ComponentSpec(path=str(tmp_path / "unet"), config={module: True})
    extended = build_from_spec(spec, "unet")
    assert getattr(extended.config, module)
    loaded = extended.state_dict()
    for name, tensor in unet.state_dict().items():
        assert torch.equal(loaded[name], tensor), name
    added = {
        "frame_position_embedding": lambda: extended.frame_embedding[2],
        "frame_caption_embedding": lambda: extended.frame_caption_embedding[2],
        "spatiotemporal_conv": lambda: extended.output_blocks[-1][0].spatiotemporal_conv.conv,
    }[module]()
    assert not any(added.weight.flatten())  # starts as the identity
    with pytest.raises(
        ConfigError, match="may only switch on \\['frame_caption_embedding', 'frame_position_embedding', 'spatiotemporal_conv'\\]"
    ):
        build_from_spec(ComponentSpec(path=str(tmp_path / "unet"), config={"model_channels": 64}), "unet")
    with pytest.raises(ConfigError, match="true or false"):
        build_from_spec(ComponentSpec(path=str(tmp_path / "unet"), config={module: "yes"}), "unet")
    with pytest.raises(ConfigError, match="preset/config"):
        build_from_spec(ComponentSpec(path=str(tmp_path / "unet"), config={"width": 8}), "vae")


# ----------------------------------------------------------------------------- a short run end to end


def test_empty_sample_prompts_write_no_videos_but_still_export(tmp_path, restore_threads):
    # A host without a video encoder trains with sample.prompts: [] and sample.every: 0.
    with pytest.raises(ConfigError, match="sample.prompts must list at least one prompt when sample.every > 0"):
        load_config(TINY_CONFIG, ["sample.every=2", "sample.prompts=[]"])
    out = tmp_path / "run"
    sets = ["run.cpu_threads=1", "run.max_steps=1", "sample.every=0", "sample.prompts=[]"]
    argv = ["train", "base", "--config", str(TINY_CONFIG), "--output", str(out)]
    assert cli_main([*argv, *(a for s in sets for a in ("--set", s))]) == 0
    assert not (out / "samples").exists()
    assert (out / "model" / "model_index.json").is_file()


def test_short_run_checkpoints_samples_exports_and_resumes(tmp_path, restore_threads):
    out = tmp_path / "run"
    overrides = [
        f"output_dir={out}",
        "run.cpu_threads=1",
        "run.max_steps=4",
        "sample.every=2",
    ]
    result = Trainer(load_config(TINY_CONFIG, overrides)).train()

    assert result.step == 4 and math.isfinite(result.loss)
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [2, 4]
    state = json.loads((out / "checkpoints" / "step-00000004" / "state.json").read_text())
    assert state["data_position"] == 8 and state["ema_updates"] == 4  # 4 steps x grad_accum 2
    with (out / "logs" / "train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["lr"]) == pytest.approx(5e-4)  # warm-up step 1 of 2

    for step in (2, 4):
        (video,) = sorted((out / "samples" / f"step-0000000{step}").glob("*.mp4"))
        frames, fps = read_video(video)
        assert frames.shape == (4, 32, 32, 3) and fps == 8

    live = load_file(out / "checkpoints" / "step-00000004" / "model.safetensors")
    ema = load_file(out / "checkpoints" / "step-00000004" / "ema.safetensors")
    early = load_file(out / "checkpoints" / "step-00000002" / "model.safetensors")
    assert any(not torch.equal(live[k], early[k]) for k in live)  # it trained
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # and the EMA lags behind

    pipe = HummingbirdPipeline.from_pretrained(result.model_dir)
    assert pipe.config.sampler == "ddim" and pipe.config.use_scale is False
    assert (pipe.config.defaults.num_frames, pipe.config.defaults.height) == (4, 32)
    exported = pipe.unet.state_dict()
    assert all(torch.equal(exported[k], ema[k]) for k in ema)  # the model folder holds the EMA weights
    vae = build_from_spec(
        ComponentSpec(path=str(result.model_dir)), "vae"
    )  # a model folder works as a component source
    assert torch.equal(
        vae.state_dict()["autoencoder.encoder.conv_in.weight"],
        pipe.vae.state_dict()["autoencoder.encoder.conv_in.weight"],
    )

    # Starting again in the same folder needs --resume; with it, the run continues to the new max_steps.
    base = [
        "train",
        "base",
        "--config",
        str(TINY_CONFIG),
        "--output",
        str(out),
        "--set",
        "run.cpu_threads=1",
    ]
    assert cli_main([*base, "--set", "run.max_steps=5"]) == 2
    assert cli_main([*base, "--resume", "--set", "run.max_steps=5"]) == 0
    with (out / "logs" / "train.csv").open() as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4, 5]
    assert json.loads((out / "checkpoints" / "step-00000005" / "state.json").read_text())["data_position"] == 10

    assert cli_main(["train", "export", "--run", str(out), "-o", str(tmp_path / "exported")]) == 0
    reloaded = HummingbirdPipeline.from_pretrained(tmp_path / "exported")
    final_ema = load_file(out / "checkpoints" / "step-00000005" / "ema.safetensors")
    assert all(torch.equal(reloaded.unet.state_dict()[k], final_ema[k]) for k in final_ema)


@dataclass(frozen=True)
class _NoSettings:
    pass


class _CountingObjective(DiffusionObjective):
    """The diffusion loss plus objective-owned state that the loop must step and checkpoint."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.updates = 0

    def after_optimizer_step(self) -> None:
        self.updates += 1

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        return {"updates": torch.tensor(self.updates)}

    def load_extra_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.updates = int(state["updates"])


register_objective(
    ObjectiveSpec(
        name="test-counting",
        settings_class=_NoSettings,
        build=lambda _, c: _CountingObjective(c.unet),
    )
)


def test_objective_hooks_run_every_step_and_their_state_is_checkpointed(tmp_path, restore_threads):
    overrides = [
        f"output_dir={tmp_path}",
        "run.cpu_threads=1",
        "run.max_steps=3",
        "run.grad_accum=1",
        "objective={name: test-counting}",
    ]
    trainer = Trainer(load_config(TINY_CONFIG, overrides))
    trainer.train()
    assert trainer.objective_module.updates == 3
    saved = load_file(tmp_path / "checkpoints" / "step-00000002" / "objective.safetensors")
    assert int(saved["updates"]) == 2
    resumed = Trainer(
        load_config(TINY_CONFIG, overrides),
        resume=tmp_path / "checkpoints" / "step-00000002",
    )
    assert resumed.objective_module.updates == 2 and resumed.step == 2


def test_resume_without_a_checkpoint_starts_fresh(tmp_path, restore_threads):
    trainer = Trainer(load_config(TINY_CONFIG, [f"output_dir={tmp_path}", "run.cpu_threads=1"]), resume=True)
    assert trainer.step == 0 and trainer.data_position == 0 and trainer.last_checkpoint is None
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        Trainer(load_config(TINY_CONFIG, [f"output_dir={tmp_path}"]), resume=tmp_path)


def test_tensorboard_switch(tmp_path):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            MetricsLogger(tmp_path, enabled=True, tensorboard=True)
    else:
        logger = MetricsLogger(tmp_path, enabled=True, tensorboard=True)
        logger.log(1, {"loss": 0.5})
        logger.close()
        assert any((tmp_path / "logs" / "tensorboard").iterdir())
    quiet = MetricsLogger(tmp_path / "csv_only", enabled=True, tensorboard=False)
    quiet.log(1, {"loss": 0.5})
    quiet.log(2, {"loss": 0.25, "late_metric": 1.0})  # a key after the header is left out of the CSV
    assert (tmp_path / "csv_only" / "logs" / "train.csv").read_text().splitlines() == ["step,loss", "1,0.5", "2,0.25"]


def test_cli_refuses_a_config_for_another_objective(tmp_path, capsys):
    config = tmp_path / "other.yaml"
    config.write_text(TINY_CONFIG.read_text().replace("name: diffusion", "name: distill"))
    assert cli_main(["train", "base", "--config", str(config), "--output", str(tmp_path / "x")]) == 2
    assert "trains objective 'distill'" in capsys.readouterr().err


def test_a_bare_component_folder_of_another_class_says_to_name_the_class():
    """The shipped toy text encoder folder holds a WordTextEncoder; read as the default OpenCLIP
    encoder it fails, and the error says which setting fixes it."""
    folder = REPO / "src" / "hummingbird_t2v" / "assets" / "toy" / "text_encoder"
    with pytest.raises(ConfigError, match="model.text_encoder.class_name"):
        build_from_spec(ComponentSpec(path=str(folder)), "text_encoder")
    encoder = build_from_spec(ComponentSpec(path=str(folder), class_name="WordTextEncoder"), "text_encoder")
    assert encoder.config.width == 128


@pytest.mark.parametrize("role", ["unet", "vae", "text_encoder"])
def test_a_model_folder_missing_the_role_says_which_sub_folder(tmp_path, role):
    """A model folder without the role's sub-folder names it, instead of failing on a missing file."""
    (tmp_path / "model_index.json").write_text(json.dumps({"components": {}}))
    with pytest.raises(ConfigError, match=f"model.{role}.path .* model folder without {role}/"):
        build_from_spec(ComponentSpec(path=str(tmp_path)), role)
