"""UNet3D structure (official state-dict manifests, parameter counts), config handling and forward behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import (
    UNet3D,
    add_frame_caption_embedding,
    add_frame_position_embedding,
    add_spatiotemporal_convs,
    count_parameters,
)
from hummingbird_t2v.models.unet_blocks import ResBlock, SpatiotemporalConv
from hummingbird_t2v.models.unet_config import UNET_PRESETS, UNetConfig, get_unet_preset

FULL_SIZE = {
    # preset: (manifest made from the official classes, official parameter count)
    "vc2": ("keys_vc2_unet.tsv", 1_413_284_420),
    "hb-0.9b": ("keys_hb09_unet.tsv", 945_209_220),
    "hb-0.7b": ("keys_hb07_unet.tsv", 772_091_780),
}
# Parameter counts of the official tiny golden models (reference README).
TINY_COUNTS = {"tiny-vc2": 4_061_284, "tiny-hb-0.9b": 2_742_180, "tiny-hb-0.7b": 2_298_788}


def _read_manifest(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines():
        name, shape, _dtype = line.split("\t")
        rows.append((name, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


@pytest.mark.parametrize("preset", sorted(FULL_SIZE))
def test_full_size_state_dict_matches_official_manifest(preset, reference_dir):
    manifest_file, n_params = FULL_SIZE[preset]
    manifest = _read_manifest(reference_dir / manifest_file)
    with torch.device("meta"):
        model = UNet3D(get_unet_preset(preset))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == manifest
    assert count_parameters(model) == n_params

    with torch.device("meta"):
        official_like = {name: torch.empty(shape) for name, shape in manifest}
    result = model.load_state_dict(official_like, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("preset", sorted(TINY_COUNTS))
def test_tiny_presets_have_the_official_tiny_parameter_counts(preset):
    with torch.device("meta"):
        assert count_parameters(UNet3D(get_unet_preset(preset))) == TINY_COUNTS[preset]


# ------------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
def test_config_round_trips_through_json(preset):
    config = get_unet_preset(preset)
    restored = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


def test_from_dict_names_unknown_keys():
    d = UNetConfig().to_dict() | {"bogus": 1, "use_fp17": True}
    with pytest.raises(ConfigError, match="bogus.*use_fp17"):
        UNetConfig.from_dict(d)


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        get_unet_preset("hb-0.5b")
    for name in ("vc2", "hb-0.9b", "hb-0.7b", "tiny-vc2"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"model_channels": 40}, "divisible by 32"),
        ({"num_head_channels": 64, "model_channels": 32}, "num_head_channels"),
        ({"channel_mult": ()}, "channel_mult"),
        ({"channel_mult": "abc"}, "channel_mult"),
        ({"dropout": 1.5}, "dropout"),
        ({"time_cond_proj_dim": 0}, "time_cond_proj_dim"),
    ],
)
def test_invalid_configs_raise_config_error(change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        UNetConfig(**change)


def test_students_differ_from_teacher_only_where_the_spec_says():
    teacher, hb09, hb07 = (get_unet_preset(n) for n in ("vc2", "hb-0.9b", "hb-0.7b"))
    assert (teacher.num_res_blocks, teacher.time_cond_proj_dim, teacher.use_middle_block) == (2, None, True)
    assert hb09 == teacher.replace(num_res_blocks=1, time_cond_proj_dim=256)
    assert hb07 == hb09.replace(use_middle_block=False)


# ------------------------------------------------------------------------------------------------ forward


def _randomised(preset: str | UNetConfig, seed: int = 0) -> UNet3D:
    """Tiny model with every weight non-zero (the zero-initialised output layers would hide bugs)."""
    torch.manual_seed(seed)
    model = UNet3D(get_unet_preset(preset) if isinstance(preset, str) else preset).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _inputs(batch: int = 2, frames: int = 3, seed: int = 1, guidance: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, frames, 8, 16, generator=g)
    context = torch.randn(batch, 5, 32, generator=g)
    timesteps = torch.tensor([999, 250][:batch])
    kwargs = {"timestep_cond": torch.randn(batch, 256, generator=g)} if guidance else {}
    return x, timesteps, context, kwargs


@pytest.fixture(scope="module")
def student() -> UNet3D:
    return _randomised("tiny-hb-0.9b")


@torch.no_grad()
def test_forward_keeps_shape_and_fps_defaults(student):
    x, t, context, kw = _inputs()
    y = student(x, t, context, **kw)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, student(x, t, context, fps=16, **kw))  # default_fps
    y8 = student(x, t, context, fps=8, **kw)
    assert torch.equal(y8, student(x, t, context, fps=torch.tensor([8, 8]), **kw))
    assert not torch.allclose(y, y8)  # fps really conditions the output


@torch.no_grad()
def test_scalar_timestep_broadcasts(student):
    x, _, context, kw = _inputs()
    y = student(x, 500, context, **kw)
    assert torch.equal(y, student(x, torch.tensor([500, 500]), context, **kw))
    assert torch.equal(y, student(x, torch.tensor(500), context, **kw))


@torch.no_grad()
def test_samples_are_processed_independently(student):
    x, t, context, kw = _inputs()
    both = student(x, t, context, fps=torch.tensor([8, 24]), **kw)
    for i, fps in enumerate((8, 24)):
        single = student(
            x[i : i + 1], t[i : i + 1], context[i : i + 1], fps=fps, timestep_cond=kw["timestep_cond"][i : i + 1]
        )
        torch.testing.assert_close(both[i : i + 1], single, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_frames_interact_through_temporal_layers(student):
    x, t, context, kw = _inputs()
    y = student(x, t, context, **kw)
    x2 = x.clone()
    x2[:, :, 2] += 1.0  # change only the last frame
    y2 = student(x2, t, context, **kw)
    assert not torch.allclose(y[:, :, 0], y2[:, :, 0])


def test_guidance_embedding_is_required_exactly_for_students(student):
    x, t, context, kw = _inputs()
    with pytest.raises(ConfigError, match="timestep_cond"):
        student(x, t, context)
    with pytest.raises(ConfigError, match="timestep_cond"):
        student(x, t, context, timestep_cond=torch.zeros(2, 7))
    teacher = UNet3D(get_unet_preset("tiny-vc2"))
    with pytest.raises(ConfigError, match="no guidance projection"):
        teacher(x, t, context, **kw)


@pytest.mark.parametrize(
    "x_shape, context_shape, fragment",
    [
        ((2, 4, 3, 8), (2, 5, 32), "frames, height, width"),
        ((2, 3, 3, 8, 16), (2, 5, 32), "frames, height, width"),
        ((2, 4, 3, 12, 16), (2, 5, 32), "multiples of 8"),
        ((2, 4, 3, 8, 16), (2, 5, 31), "context"),
        ((2, 4, 3, 8, 16), (1, 5, 32), "context"),
    ],
)
def test_bad_input_shapes_raise_config_error(student, x_shape, context_shape, fragment):
    _, t, _, kw = _inputs()
    with pytest.raises(ConfigError, match=fragment):
        student(torch.zeros(x_shape), t, torch.zeros(context_shape), **kw)


def test_bad_fps_shape_raises_config_error(student):
    x, t, context, kw = _inputs()
    with pytest.raises(ConfigError, match="fps"):
        student(x, t, context, fps=torch.tensor([8, 8, 8]), **kw)


def test_middle_block_absent_only_in_hb07():
    with torch.device("meta"):
        assert UNet3D(get_unet_preset("tiny-hb-0.7b")).middle_block is None
        assert UNet3D(get_unet_preset("tiny-hb-0.9b")).middle_block is not None


@torch.no_grad()
def test_bfloat16_forward_is_close_to_float32(student):
    x, t, context, kw = _inputs()
    reference = student(x, t, context, **kw)
    low = _randomised("tiny-hb-0.9b").to(torch.bfloat16)
    y = low(x, t, context, **kw)
    assert y.dtype == torch.float32  # returned in the input's dtype
    relative = (y - reference).abs().max() / reference.abs().max()
    assert relative < 0.05, relative
    y_bf16 = low(x.bfloat16(), t, context.bfloat16(), **{k: v.bfloat16() for k, v in kw.items()})
    assert y_bf16.dtype == torch.bfloat16 and torch.isfinite(y_bf16).all()


def test_group_norm_statistics_are_computed_in_float32(monkeypatch):
    from hummingbird_t2v.models import unet_blocks

    seen = []
    real_group_norm = torch.nn.functional.group_norm

    def spy(x, groups, weight, bias, eps):
        seen.append((x.dtype, weight.dtype, bias.dtype))
        return real_group_norm(x, groups, weight, bias, eps)

    monkeypatch.setattr(unet_blocks.F, "group_norm", spy)
    norm = unet_blocks.GroupNorm32(64, eps=1e-5).to(torch.bfloat16)
    x = torch.randn(2, 64, 4, 4).bfloat16()
    y = norm(x)
    assert seen == [(torch.float32, torch.float32, torch.float32)]
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, real_group_norm(x.float(), 32, eps=1e-5).bfloat16())


def test_gradient_checkpointing_gives_the_same_gradients():
    x, t, context, kw = _inputs(batch=1)
    grads = []
    for checkpointed in (False, True):
        model = _randomised("tiny-hb-0.7b")
        model.enable_gradient_checkpointing(checkpointed)
        model(x, t, context, **kw).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_temporal_conv_dropout_acts_only_in_training_mode():
    model = _randomised("tiny-hb-0.7b")
    x, t, context, kw = _inputs(batch=1)
    assert torch.equal(model(x, t, context, **kw), model(x, t, context, **kw))
    model.train()
    assert not torch.equal(model(x, t, context, **kw), model(x, t, context, **kw))


# ------------------------------------------------------------------------------- frame position embedding


def test_frame_position_embedding_is_off_in_every_released_structure():
    assert not any(config.frame_position_embedding for config in UNET_PRESETS.values())
    assert "frame_embedding.0.weight" not in UNet3D(get_unet_preset("tiny-vc2")).state_dict()


@pytest.mark.parametrize(
    "add, option, attribute",
    [
        (add_frame_position_embedding, "frame_position_embedding", "frame_embedding"),
        (add_frame_caption_embedding, "frame_caption_embedding", "frame_caption_embedding"),
    ],
)
@torch.no_grad()
def test_an_added_frame_embedding_starts_as_the_identity_and_shares_the_weights(add, option, attribute):
    base = _randomised("tiny-vc2")
    assert not any(getattr(config, option) for config in UNET_PRESETS.values())
    extended = add(base)
    assert getattr(extended.config, option) and not getattr(base.config, option)
    assert {k for k in extended.state_dict()} - set(base.state_dict()) == {
        f"{attribute}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    c = base.config
    inputs = c.model_channels + (c.context_dim if option == "frame_caption_embedding" else 0)
    assert getattr(extended, attribute)[0].in_features == inputs
    assert extended.input_blocks[0][0].weight.data_ptr() == base.input_blocks[0][0].weight.data_ptr()  # shared storage
    x, t, context, _ = _inputs(guidance=False)
    torch.testing.assert_close(extended(x, t, context), base(x, t, context), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="already has"):
        add(extended)


@torch.no_grad()
def test_trained_frame_position_embedding_tells_the_frames_apart_per_sample():
    """Each sample's frame f gets the embedding of index f: two copies of one sample in a batch give the
    same output as the sample alone, and the embedding changes the output."""
    model = _randomised(get_unet_preset("tiny-vc2").replace(frame_position_embedding=True))
    x, t, context, _ = _inputs(batch=1, frames=4, guidance=False)
    single = model(x, t, context)
    with torch.no_grad():
        model.frame_embedding[2].weight.zero_()
        model.frame_embedding[2].bias.zero_()
    assert not torch.allclose(single, model(x, t, context), atol=1e-4)
    model = _randomised(get_unet_preset("tiny-vc2").replace(frame_position_embedding=True))
    pair = model(x.repeat(2, 1, 1, 1, 1), t.repeat(2), context.repeat(2, 1, 1))
    torch.testing.assert_close(pair[:1], single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pair[1:], single, atol=1e-5, rtol=1e-5)


def test_a_frame_position_embedding_learns_from_its_zero_start():
    model = add_frame_position_embedding(_randomised("tiny-vc2"))
    x, t, context, _ = _inputs(guidance=False)
    model(x, t, context).square().mean().backward()
    assert model.frame_embedding[2].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- frame-and-caption embedding


@torch.no_grad()
def test_trained_frame_caption_embedding_pairs_each_frame_with_its_own_samples_caption():
    """Two samples with different captions in one batch each give what they give alone (rows are
    sample-major), and the embedding changes the output."""
    model = _randomised(get_unet_preset("tiny-vc2").replace(frame_caption_embedding=True))
    x, t, context, _ = _inputs(batch=2, frames=4, guidance=False)
    both = model(x, t, context)
    for i in range(2):
        alone = model(x[i : i + 1], t[i : i + 1], context[i : i + 1])
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    model.frame_caption_embedding[2].weight.zero_()
    model.frame_caption_embedding[2].bias.zero_()
    assert not torch.allclose(both, model(x, t, context), atol=1e-4)


def test_a_frame_caption_embedding_learns_from_its_zero_start():
    model = add_frame_caption_embedding(_randomised("tiny-vc2"))
    x, t, context, _ = _inputs(guidance=False)
    model(x, t, context).square().mean().backward()
    assert model.frame_caption_embedding[2].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- spatiotemporal convs


@torch.no_grad()
def test_added_spatiotemporal_convs_start_as_the_identity_one_per_resblock():
    base = _randomised("tiny-vc2")
    assert not any(config.spatiotemporal_conv for config in UNET_PRESETS.values())
    extended = add_spatiotemporal_convs(base)
    assert extended.config.spatiotemporal_conv and not base.config.spatiotemporal_conv
    resblocks = [name for name, module in base.named_modules() if isinstance(module, ResBlock)]
    assert {k for k in extended.state_dict()} - set(base.state_dict()) == {
        f"{block}.spatiotemporal_conv.{layer}.{p}" for block in resblocks for layer in ("norm", "conv") for p in ("weight", "bias")
    }
    assert extended.input_blocks[0][0].weight.data_ptr() == base.input_blocks[0][0].weight.data_ptr()  # shared storage
    x, t, context, _ = _inputs(guidance=False)
    torch.testing.assert_close(extended(x, t, context), base(x, t, context), atol=0, rtol=0)
    with pytest.raises(ConfigError, match="already has"):
        add_spatiotemporal_convs(extended)


def test_a_spatiotemporal_conv_learns_from_its_zero_start_and_reaches_the_neighbouring_frames_pixels():
    model = add_spatiotemporal_convs(_randomised("tiny-vc2"))
    x, t, context, _ = _inputs(guidance=False)
    model(x, t, context).square().mean().backward()
    conv = model.output_blocks[-1][0].spatiotemporal_conv.conv
    assert conv.kernel_size == (3, 3, 3) and conv.weight.grad.abs().sum() > 0
    # One tap, frame t-1 one pixel to the left -> frame t: a feature moving right by a pixel a frame.
    block = SpatiotemporalConv(32)
    with torch.no_grad():
        block.conv.weight[:, :, 0, 1, 0] = torch.eye(32)
    video = torch.randn(1, 32, 4, 6, 6, requires_grad=True)
    block(video)[0, :, 2, 3, 3].sum().backward()
    reach = video.grad[0].abs().sum(0)  # (frames, h, w)
    assert reach[1, 3, 2] > 10 * reach[1, 3, 4]  # the oriented tap dominates its mirror image
