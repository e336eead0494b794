"""Reward models (HPSv2.1, generic CLIP, ViCLIP): key converters, loaders and forward passes.

No real reward weights exist here, so every loader is checked on tiny files written in the
official key layouts, and every converted model is compared with an independent plain-torch
implementation written straight from the open_clip / ViCLIP tensors (explicit matmuls, the
official token layout), plus the golden open_clip text tower for the text side.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import CLIPConfig, CLIPModel

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.tokenizer import OpenCLIPTokenizer
from hummingbird_t2v.rewards import (
    CLIPImageTextReward,
    HPSv2Config,
    HPSv2Reward,
    ImagePreprocess,
    RewardInputError,
    ViCLIPReward,
    build_reward_model,
)
from hummingbird_t2v.rewards.convert import convert_open_clip_model, text_config_and_weights_from_open_clip
from hummingbird_t2v.rewards.loading import build_uninitialised, read_reward_weights
from hummingbird_t2v.rewards.preprocess import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from hummingbird_t2v.rewards.viclip import ViCLIPConfig, convert_viclip_state_dict

PROMPTS = ["a red circle moving left on a blue background", "An astronaut riding a horse, 4k"]
TOL = {"atol": 2e-5, "rtol": 1e-4}


# --- tiny state dicts in the official layouts ---------------------------------------------------


def _resblocks(prefix: str, width: int, layers: int, g: torch.Generator, device: str) -> dict[str, torch.Tensor]:
    def rand(*shape: int, scale: float) -> torch.Tensor:
        if device == "meta":
            return torch.empty(shape, device="meta")
        return torch.randn(shape, generator=g) * scale

    out = {}
    for i in range(layers):
        p = f"{prefix}transformer.resblocks.{i}."
        out.update({
            p + "ln_1.weight": 1 + rand(width, scale=0.1), p + "ln_1.bias": rand(width, scale=0.1),
            p + "attn.in_proj_weight": rand(3 * width, width, scale=width**-0.5),
            p + "attn.in_proj_bias": rand(3 * width, scale=0.1),
            p + "attn.out_proj.weight": rand(width, width, scale=width**-0.5),
            p + "attn.out_proj.bias": rand(width, scale=0.1),
            p + "ln_2.weight": 1 + rand(width, scale=0.1), p + "ln_2.bias": rand(width, scale=0.1),
            p + "mlp.c_fc.weight": rand(4 * width, width, scale=width**-0.5),
            p + "mlp.c_fc.bias": rand(4 * width, scale=0.1),
            p + "mlp.c_proj.weight": rand(width, 4 * width, scale=(4 * width) ** -0.5),
            p + "mlp.c_proj.bias": rand(width, scale=0.1),
        })
    return out


def _tower(
    vision: str, text: str, *, width: int, layers: int, patch: int, grid: int, text_width: int, text_layers: int,
    context: int, embed: int, conv3d: bool = False, frames: int = 0, seed: int = 0, device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """open_clip-layout vision + text towers under the given prefixes (meta device: shapes only)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float) -> torch.Tensor:
        return torch.empty(shape, device="meta") if device == "meta" else torch.randn(shape, generator=g) * scale

    conv_shape = (width, 3, 1, patch, patch) if conv3d else (width, 3, patch, patch)
    sd = {
        vision + "conv1.weight": rand(*conv_shape, scale=(3 * patch * patch) ** -0.5),
        vision + "class_embedding": rand(width, scale=0.5),
        vision + "positional_embedding": rand(grid * grid + 1, width, scale=0.5),
        vision + "ln_pre.weight": 1 + rand(width, scale=0.1), vision + "ln_pre.bias": rand(width, scale=0.1),
        vision + "ln_post.weight": 1 + rand(width, scale=0.1), vision + "ln_post.bias": rand(width, scale=0.1),
        vision + "proj": rand(width, embed, scale=width**-0.5),
        text + "token_embedding.weight": rand(49408, text_width, scale=0.5),
        text + "positional_embedding": rand(context, text_width, scale=0.5),
        text + "ln_final.weight": 1 + rand(text_width, scale=0.1), text + "ln_final.bias": rand(text_width, scale=0.1),
        text + "text_projection": rand(text_width, embed, scale=text_width**-0.5),
    }
    if frames:
        sd[vision + "temporal_positional_embedding"] = rand(1, frames, width, scale=0.5)
    sd.update(_resblocks(vision, width, layers, g, device))
    sd.update(_resblocks(text, text_width, text_layers, g, device))
    return sd


def tiny_open_clip(seed: int = 0) -> dict[str, torch.Tensor]:
    sd = _tower("visual.", "", width=32, layers=2, patch=14, grid=2, text_width=32, text_layers=2, context=77,
                embed=16, seed=seed)
    sd["logit_scale"] = torch.tensor(math.log(100.0))
    return sd


def tiny_viclip(seed: int = 1, frames: int = 4) -> dict[str, torch.Tensor]:
    sd = _tower("vision_encoder.", "text_encoder.", width=32, layers=2, patch=14, grid=2, text_width=32,
                text_layers=2, context=32, embed=16, conv3d=True, frames=frames, seed=seed)
    sd["temp"] = torch.tensor(0.01)
    return sd


# --- an independent plain-torch reference of the official forward passes ------------------------


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def _ln(x, p, name):
    return F.layer_norm(x, x.shape[-1:], p[name + ".weight"], p[name + ".bias"], 1e-5)


def _reference_blocks(x, p, prefix, heads, act, causal=False):
    """open_clip ResidualAttentionBlocks on batch-first x, with explicit attention arithmetic."""
    n, length, width = x.shape
    head = width // heads
    mask = torch.full((length, length), float("-inf")).triu(1) if causal else torch.zeros(length, length)
    i = 0
    while f"{prefix}transformer.resblocks.{i}.ln_1.weight" in p:
        b = f"{prefix}transformer.resblocks.{i}."
        h = _ln(x, p, b + "ln_1")
        q, k, v = (h @ p[b + "attn.in_proj_weight"].T + p[b + "attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, heads, head).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head) + mask, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(n, length, width)
        x = x + attended @ p[b + "attn.out_proj.weight"].T + p[b + "attn.out_proj.bias"]
        h = act(_ln(x, p, b + "ln_2") @ p[b + "mlp.c_fc.weight"].T + p[b + "mlp.c_fc.bias"])
        x = x + h @ p[b + "mlp.c_proj.weight"].T + p[b + "mlp.c_proj.bias"]
        i += 1
    return x


def reference_open_clip_image(p, pixels, heads, act=F.gelu, prefix="visual."):
    patch = p[prefix + "conv1.weight"].shape[-1]
    x = F.conv2d(pixels, p[prefix + "conv1.weight"], stride=patch).flatten(2).transpose(1, 2)
    cls = p[prefix + "class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + p[prefix + "positional_embedding"]
    x = _reference_blocks(_ln(x, p, prefix + "ln_pre"), p, prefix, heads, act)
    return _ln(x, p, prefix + "ln_post")[:, 0] @ p[prefix + "proj"]


def reference_open_clip_text(p, ids, heads, act=F.gelu, prefix=""):
    x = p[prefix + "token_embedding.weight"][ids] + p[prefix + "positional_embedding"]
    x = _ln(_reference_blocks(x, p, prefix, heads, act, causal=True), p, prefix + "ln_final")
    return x[torch.arange(len(ids)), ids.argmax(dim=-1)] @ p[prefix + "text_projection"]


def reference_viclip_video(p, pixels, heads):
    """The official ViCLIP video tower's data flow: Conv3d patches, per-frame class tokens of which
    the first batch rows are kept, '(b t) n m -> (b n) t m' for the temporal embedding, joint attention."""
    v = "vision_encoder."
    b, t = pixels.shape[:2]
    conv = p[v + "conv1.weight"]
    x = F.conv3d(pixels.permute(0, 2, 1, 3, 4), conv, stride=conv.shape[2:])  # (b, W, t, g, g)
    width = x.shape[1]
    x = x.permute(0, 2, 3, 4, 1).reshape(b * t, -1, width)
    x = torch.cat([p[v + "class_embedding"].expand(b * t, 1, width), x], dim=1) + p[v + "positional_embedding"]
    cls = x[:b, :1]
    x = x[:, 1:]
    n = x.shape[1]
    x = x.reshape(b, t, n, width).transpose(1, 2).reshape(b * n, t, width)
    temporal = p[v + "temporal_positional_embedding"]
    x = x + (temporal.mean(1) if t == 1 else temporal)
    x = x.reshape(b, n * t, width)
    x = _reference_blocks(_ln(torch.cat([cls, x], dim=1), p, v + "ln_pre"), p, v, heads, quick_gelu)
    return _ln(x, p, v + "ln_post")[:, 0] @ p[v + "proj"]


def _unit(x):
    return F.normalize(x, dim=-1)


# --- HPSv2.1 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hps_file(tmp_path_factory):
    """A tiny HPS file as released: open_clip names nested under 'state_dict', fp16 tensors."""
    sd = {k: v.half() for k, v in tiny_open_clip().items()}
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": sd}, path)
    return path, {k: v.float() for k, v in sd.items()}


@pytest.fixture(scope="module")
def hps(hps_file):
    return HPSv2Reward.from_checkpoint(hps_file[0], HPSv2Config(vision_heads=4, text_heads=4))


def test_hps_image_and_text_features_equal_the_open_clip_reference(hps, hps_file):
    _, weights = hps_file
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    expected = _unit(reference_open_clip_image(weights, pixels, heads=4))
    torch.testing.assert_close(hps.encode_images(pixels), expected, **TOL)
    ids = OpenCLIPTokenizer()(PROMPTS)
    expected_text = _unit(reference_open_clip_text(weights, ids, heads=4))
    torch.testing.assert_close(hps.encode_text(PROMPTS), expected_text, **TOL)


def test_hps_score_is_the_mean_per_frame_cosine_of_letterboxed_frames(hps, hps_file):
    _, weights = hps_file
    frames = torch.rand(2, 3, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    # 20x28 -> longer side already 28: no resize, 4 black rows above and below, then CLIP mean/std.
    boxed = F.pad(frames.flatten(0, 1), (0, 0, 4, 4), value=0.0)
    mean, std = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1), torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    image = _unit(reference_open_clip_image(weights, (boxed - mean) / std, heads=4)).view(2, 3, -1)
    text = _unit(reference_open_clip_text(weights, OpenCLIPTokenizer()(PROMPTS), heads=4))
    expected = (image * text[:, None]).sum(-1).mean(1)
    torch.testing.assert_close(hps.score(frames, PROMPTS), expected, **TOL)
    torch.testing.assert_close(hps.score_frames(frames, PROMPTS).mean(1), expected, **TOL)


def test_hps_text_tower_matches_the_official_open_clip_output(golden_dir):
    """The golden tiny text tower (run through official open_clip): pooled features = z_last at the
    end token @ text_projection; our converted transformers text tower must give the same."""
    weights = {k: v.float() for k, v in load_file(golden_dir / "tiny_openclip_text.safetensors").items()}
    io = load_file(golden_dir / "tiny_openclip_text_io.safetensors")
    config, converted = text_config_and_weights_from_open_clip(weights, num_heads=4)
    from transformers import CLIPTextModelWithProjection

    model = CLIPTextModelWithProjection(config).eval()
    model.load_state_dict(converted, strict=True)
    tokens = io["tokens"]
    expected = io["z_last"][torch.arange(len(tokens)), tokens.argmax(-1)] @ weights["text_projection"]
    with torch.no_grad():
        got = model(input_ids=tokens).text_embeds
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_hps_gradients_reach_frames_and_weights_stay_frozen(hps):
    frames = torch.rand(2, 2, 3, 33, 47, requires_grad=True)
    hps.score(frames, PROMPTS).sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in hps.parameters())
    hps.train()
    assert not hps.training and not any(m.training for m in hps.modules())


def test_hps_text_features_are_cached_per_prompt(hps_file):
    reward = HPSv2Reward.from_checkpoint(hps_file[0], HPSv2Config(vision_heads=4, text_heads=4))
    calls = []
    tokenize = reward.tokenizer
    reward.tokenizer = lambda prompts: calls.append(list(prompts)) or tokenize(prompts)
    frames = torch.rand(1, 1, 3, 28, 28).expand(3, -1, -1, -1, -1)  # one image, so equal prompts score equally
    first = reward.score(frames, [PROMPTS[0], PROMPTS[1], PROMPTS[0]])
    second = reward.score(frames, [PROMPTS[1], PROMPTS[0], PROMPTS[1]])
    assert calls == [[PROMPTS[0], PROMPTS[1]]]  # each prompt encoded once, duplicates folded
    assert first[0] == first[2] and first[1] == second[0]
    reward.to(torch.float64)  # moving the model drops the cache (features live on its device/dtype)
    assert len(reward.text_cache) == 0
    scores = reward.score(frames[:2].double(), PROMPTS)
    assert scores.dtype == torch.float32 and len(calls) == 2
    torch.testing.assert_close(scores, first[:2], atol=1e-5, rtol=1e-5)


def test_hps_loads_straight_into_half_precision_with_rebuilt_position_ids(hps_file):
    reward = HPSv2Reward.from_checkpoint(hps_file[0], HPSv2Config(vision_heads=4, text_heads=4), torch.bfloat16)
    assert {p.dtype for p in reward.parameters()} == {torch.bfloat16}
    fresh = CLIPModel(reward.clip.config)  # transformers' own buffers, for comparison
    for name, buffer in fresh.named_buffers():
        assert torch.equal(reward.clip.get_buffer(name), buffer), name
    assert torch.isfinite(reward.score(torch.rand(1, 2, 3, 30, 30), PROMPTS[:1])).all()


def test_hps_loader_accepts_bare_and_ddp_state_dicts_and_safetensors(tmp_path, hps_file):
    from safetensors.torch import save_file

    sd = tiny_open_clip()
    bare, ddp, st = tmp_path / "bare.pt", tmp_path / "ddp.pt", tmp_path / "w.safetensors"
    torch.save(sd, bare)
    torch.save({"module." + k: v for k, v in sd.items()}, ddp)
    save_file({k: v.contiguous() for k, v in sd.items()}, st)
    reference = read_reward_weights(bare)
    for path in (ddp, st):
        loaded = read_reward_weights(path)
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_hps_loader_names_what_is_wrong(tmp_path):
    sd = tiny_open_clip()
    with pytest.raises(CheckpointError, match="no such file"):
        HPSv2Reward.from_checkpoint(tmp_path / "missing.pt")
    broken = dict(sd)
    del broken["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        HPSv2Reward.from_open_clip_state_dict(broken, HPSv2Config(vision_heads=4, text_heads=4))
    with pytest.raises(CheckpointError, match="visual"):
        HPSv2Reward.from_open_clip_state_dict({k: v for k, v in sd.items() if not k.startswith("visual.")})
    with pytest.raises(ConfigError, match="vision_heads"):
        HPSv2Reward.from_open_clip_state_dict(sd, HPSv2Config(text_heads=4))  # width 32: heads unknowable
    extra = {**sd, "visual.attn_pool.query": torch.zeros(1, 32)}
    with pytest.raises(CheckpointError, match="not part of a plain CLIP ViT"):
        HPSv2Reward.from_open_clip_state_dict(extra, HPSv2Config(vision_heads=4, text_heads=4))


def test_full_size_hps_layout_converts_onto_the_vit_h_14_clip():
    """The real HPS_v2.1 shapes (meta tensors, no memory): config, every key, every shape, 986.1M parameters."""
    sd = _tower("visual.", "", width=1280, layers=32, patch=14, grid=16, text_width=1024, text_layers=24,
                context=77, embed=1024, device="meta")
    sd["logit_scale"] = torch.empty((), device="meta")
    config, converted = convert_open_clip_model(sd)
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.image_size) == (1280, 32, 16, 224)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.hidden_act) == (1024, 24, 16, "gelu")
    model = build_uninitialised(lambda: CLIPModel(config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert sum(v.numel() for v in converted.values()) == sum(v.numel() for v in sd.values())
    assert round(sum(v.numel() for v in sd.values()) / 1e6, 1) == 986.1


def test_random_hps_reward_for_smoke_runs():
    reward = build_reward_model("hpsv2", random_weights=True, preset="tiny", seed=3)
    again = build_reward_model("hps", random_weights=True, preset="tiny", seed=3)
    frames = torch.rand(2, 5, 3, 40, 64)
    torch.testing.assert_close(reward.score(frames, PROMPTS), again.score(frames, PROMPTS))
    assert reward.kind == "image_text" and reward.num_frames is None


# --- generic transformers CLIP ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 28, "patch_size": 14},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": 77, "vocab_size": 49408, "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 0},
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 28}, "crop_size": {"height": 28, "width": 28},
        "image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD),
    }))
    return folder


def test_clip_reward_from_folder_equals_clip_model_forward(clip_folder):
    reward = build_reward_model("clip", clip_folder)
    assert reward.preprocess.mean == IMAGENET_MEAN and reward.preprocess.mode == "center_crop"
    frames = torch.rand(2, 3, 3, 28, 42, generator=torch.Generator().manual_seed(2))
    crop = frames.flatten(0, 1)[..., 7:35]  # 28x42: shorter side already 28, centred 28 columns
    pixels = (crop - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    model = CLIPModel.from_pretrained(clip_folder).eval()
    ids = OpenCLIPTokenizer()(PROMPTS)
    with torch.no_grad():
        out = model(input_ids=ids.repeat_interleave(3, 0), pixel_values=pixels)
    expected = (out.image_embeds * out.text_embeds).sum(-1).view(2, 3).mean(1)
    torch.testing.assert_close(reward.score(frames, PROMPTS), expected, **TOL)


def test_clip_reward_uses_the_folders_tokenizer_when_present(clip_folder, tmp_path):
    import shutil

    from hummingbird_t2v.models.tokenizer import _build_clip_bpe

    folder = tmp_path / "with_tokenizer"
    shutil.copytree(clip_folder, folder)
    _build_clip_bpe().save_pretrained(folder)
    with_tokenizer = CLIPImageTextReward.from_pretrained(folder)
    without = CLIPImageTextReward.from_pretrained(clip_folder)
    assert not isinstance(with_tokenizer.tokenizer, OpenCLIPTokenizer)
    frames = torch.rand(2, 1, 3, 28, 28)
    # Same BPE, possibly another padding id: causal attention makes padding irrelevant.
    torch.testing.assert_close(with_tokenizer.score(frames, PROMPTS), without.score(frames, PROMPTS), **TOL)


def test_clip_reward_rejects_folders_that_are_not_clip(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        build_reward_model("clip", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert'"):
        build_reward_model("clip", tmp_path)


# --- ViCLIP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def viclip_file(tmp_path_factory):
    """A tiny ViCLIP checkpoint as released: {'model': state dict, ...} with official key names."""
    sd = tiny_viclip()
    path = tmp_path_factory.mktemp("viclip") / "ViClip-InternVid-10M-FLT.pth"
    torch.save({"model": sd, "epoch": 9}, path)
    return path, sd


@pytest.fixture(scope="module")
def viclip(viclip_file):
    return ViCLIPReward.from_checkpoint(viclip_file[0], vision_heads=4, text_heads=4)


def test_viclip_video_and_text_features_equal_the_reference(viclip, viclip_file):
    _, weights = viclip_file
    assert viclip.num_frames == 4 and viclip.kind == "video_text" and viclip.config.context_length == 32
    pixels = torch.randn(2, 4, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(viclip.encode_video(pixels), _unit(reference_viclip_video(weights, pixels, 4)), **TOL)
    single = pixels[:, :1]
    torch.testing.assert_close(viclip.encode_video(single), _unit(reference_viclip_video(weights, single, 4)), **TOL)
    ids = OpenCLIPTokenizer(context_length=32)(PROMPTS)
    long_prompt = OpenCLIPTokenizer(context_length=32)(["dog " * 40])
    assert long_prompt.shape == (1, 32) and long_prompt[0, -1] == 49407  # cut to 32, end token kept
    expected = _unit(reference_open_clip_text(weights, ids, 4, quick_gelu, prefix="text_encoder."))
    torch.testing.assert_close(viclip.encode_text(PROMPTS), expected, **TOL)


def test_viclip_score_with_center_crop_equals_the_reference(viclip_file):
    path, weights = viclip_file
    preprocess = ImagePreprocess(size=28, mode="center_crop", mean=IMAGENET_MEAN, std=IMAGENET_STD)
    reward = build_reward_model("viclip", path, vision_heads=4, text_heads=4, preprocess=preprocess)
    frames = torch.rand(2, 4, 3, 30, 28, generator=torch.Generator().manual_seed(4))
    crop = frames[..., 1:29, :]
    pixels = (crop - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    video = _unit(reference_viclip_video(weights, pixels, 4))
    text = _unit(reference_open_clip_text(weights, OpenCLIPTokenizer(32)(PROMPTS), 4, quick_gelu, "text_encoder."))
    torch.testing.assert_close(reward.score(frames, PROMPTS), (video * text).sum(-1), **TOL)


def test_viclip_random_crop_is_reproducible_and_differentiable(viclip):
    frames = torch.rand(2, 4, 3, 40, 64, requires_grad=True)
    first = viclip.score(frames, PROMPTS, generator=torch.Generator().manual_seed(7))
    second = viclip.score(frames, PROMPTS, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, second)
    first.sum().backward()
    assert first.shape == (2,) and frames.grad.abs().sum() > 0
    assert all(p.grad is None for p in viclip.parameters())


def test_viclip_refuses_frame_counts_its_temporal_embedding_lacks(viclip):
    with pytest.raises(RewardInputError, match="exactly 4 frames"):
        viclip.score(torch.rand(1, 3, 3, 28, 28), PROMPTS[:1])


def test_viclip_loader_names_what_is_wrong(tmp_path):
    sd = tiny_viclip()
    plain = {k: v for k, v in sd.items() if "temporal" not in k}
    with pytest.raises(CheckpointError, match="temporal_positional_embedding"):
        convert_viclip_state_dict(plain, 4, 4)
    with pytest.raises(CheckpointError, match="not a ViCLIP state dict"):
        convert_viclip_state_dict({**sd, "fusion.weight": torch.zeros(1)}, 4, 4)
    kernel2 = {**sd, "vision_encoder.conv1.weight": torch.zeros(32, 3, 2, 14, 14)}
    with pytest.raises(CheckpointError, match="temporal kernel"):
        convert_viclip_state_dict(kernel2, 4, 4)
    path = tmp_path / "other.pth"
    torch.save({"optimizer": {"lr": 1.0}}, path)
    with pytest.raises(CheckpointError):
        ViCLIPReward.from_checkpoint(path)


def test_full_size_viclip_layout_converts_onto_viclip_l14():
    sd = _tower("vision_encoder.", "text_encoder.", width=1024, layers=24, patch=14, grid=16, text_width=768,
                text_layers=12, context=32, embed=768, conv3d=True, frames=8, device="meta")
    sd["temp"] = torch.empty((), device="meta")
    config, converted = convert_viclip_state_dict(sd)
    assert config == ViCLIPConfig.preset("viclip-l14")
    model = build_uninitialised(lambda: ViCLIPReward(config))
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_reward_models_run_in_bfloat16():
    reward = ViCLIPReward.random("tiny", dtype=torch.bfloat16)
    frames = torch.rand(1, 4, 3, 28, 28, requires_grad=True)
    score = reward.score(frames, PROMPTS[:1])
    score.sum().backward()
    assert score.dtype == torch.float32 and torch.isfinite(score).all() and frames.grad is not None


# --- factory ------------------------------------------------------------------------------------


def test_factory_names_and_errors():
    assert isinstance(build_reward_model("video_text", random_weights=True), ViCLIPReward)
    assert isinstance(build_reward_model("image_text", random_weights=True), HPSv2Reward)
    with pytest.raises(ConfigError, match="unknown reward model"):
        build_reward_model("pickscore")
    with pytest.raises(ConfigError, match="does not take options"):
        build_reward_model("viclip", random_weights=True, attributes=["color"])
    with pytest.raises(CheckpointError, match="HPS_v2.1_compressed.pt"):
        build_reward_model("hpsv2.1")
    with pytest.raises(CheckpointError, match="ViClip-InternVid-10M-FLT.pth"):
        build_reward_model("viclip")
