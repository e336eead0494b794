"""OpenCLIP text encoder on transformers: golden tiny tower outputs, key converter, sizes, dtypes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.checkpoints.open_clip_keys import (
    convert_open_clip_text_state_dict,
    load_open_clip_text_weights,
    text_config_from_open_clip_state_dict,
)
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder, TextEncoderConfig

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def open_clip_weights(golden_dir):
    return {k: v.float() for k, v in load_file(golden_dir / "tiny_openclip_text.safetensors").items()}


@pytest.fixture(scope="module")
def text_io(golden_dir):
    return {k: v.clone() for k, v in load_file(golden_dir / "tiny_openclip_text_io.safetensors").items()}


@pytest.fixture(scope="module")
def prompts(golden_dir):
    return json.loads((golden_dir / "tiny_openclip_text_prompts.json").read_text())["prompts"]


def _tiny_encoder(weights, layer: str) -> OpenCLIPTextEncoder:
    config = text_config_from_open_clip_state_dict(weights, num_heads=4, layer=layer)
    encoder = OpenCLIPTextEncoder(config)
    load_open_clip_text_weights(encoder, weights)
    return encoder.eval()


def test_config_inferred_from_weights_is_the_tiny_preset(open_clip_weights):
    assert text_config_from_open_clip_state_dict(open_clip_weights, num_heads=4) == TextEncoderConfig.preset("tiny")
    with pytest.raises(ConfigError, match="num_heads"):
        text_config_from_open_clip_state_dict(open_clip_weights)  # width 32: no default head count


@torch.no_grad()
@pytest.mark.parametrize("layer", ["penultimate", "last"])
def test_outputs_match_golden(open_clip_weights, text_io, prompts, layer):
    encoder = _tiny_encoder(open_clip_weights, layer)
    assert len(encoder.transformer.encoder.layers) == (2 if layer == "penultimate" else 3)
    expected = text_io[f"z_{layer}"]
    torch.testing.assert_close(encoder(text_io["tokens"]), expected, **TOL)
    torch.testing.assert_close(encoder.encode(prompts), expected, **TOL)
    # One prompt at a time gives the same rows (no cross-talk through padding or batching).
    torch.testing.assert_close(encoder.encode(prompts[4]), expected[4:5], **TOL)


def test_converter_drops_unused_and_rejects_mismatches(open_clip_weights):
    tiny = TextEncoderConfig.preset("tiny")
    converted = convert_open_clip_text_state_dict(open_clip_weights, tiny)
    assert not any(k.startswith("encoder.layers.2.") for k in converted)  # last block unused
    packed = open_clip_weights["transformer.resblocks.1.attn.in_proj_weight"]
    torch.testing.assert_close(converted["encoder.layers.1.self_attn.k_proj.weight"], packed[32:64])
    with pytest.raises(CheckpointError, match="cond_stage_model"):
        prefixed = {f"cond_stage_model.model.{k}": t for k, t in open_clip_weights.items()}
        convert_open_clip_text_state_dict(prefixed, tiny)
    without_last = {k: t for k, t in open_clip_weights.items() if not k.startswith("transformer.resblocks.2.")}
    with pytest.raises(CheckpointError, match="missing blocks \\[2\\]"):
        convert_open_clip_text_state_dict(without_last, tiny)
    with pytest.raises(CheckpointError):
        convert_open_clip_text_state_dict(open_clip_weights, TextEncoderConfig(width=64, layers=3, heads=4))


def test_vit_h_14_builds_on_meta_with_expected_size():
    with torch.device("meta"):
        penultimate = OpenCLIPTextEncoder(TextEncoderConfig.preset("vit-h-14"))
        last = OpenCLIPTextEncoder(TextEncoderConfig(layer="last"))
    n_penultimate = sum(p.numel() for p in penultimate.parameters())
    n_last = sum(p.numel() for p in last.parameters())
    assert len(penultimate.transformer.encoder.layers) == 23
    assert round(n_penultimate / 1e6, 1) == 340.4  # spec: ~340.4 M on the penultimate path
    # spec: 354.03 M as stored = all 24 blocks + text_projection (1024 x 1024) + logit_scale
    assert round((n_last + 1024 * 1024 + 1) / 1e6, 2) == 354.03


def test_config_round_trip_and_errors():
    config = TextEncoderConfig.preset("vit-h-14")
    assert TextEncoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError):
        TextEncoderConfig(layer="first")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TextEncoderConfig(width=30, heads=4)
    with pytest.raises(ConfigError):
        TextEncoderConfig.preset("vit-g-14")


def test_bad_token_ids_raise(open_clip_weights):
    encoder = _tiny_encoder(open_clip_weights, "penultimate")
    with pytest.raises(ConfigError, match="shape"):
        encoder(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ConfigError, match="lie in"):
        encoder(torch.full((1, 77), 49408))


@torch.no_grad()
def test_bfloat16_smoke(open_clip_weights, text_io):
    encoder = _tiny_encoder(open_clip_weights, "penultimate").to(torch.bfloat16)
    z = encoder.encode(["", "a corgi in the park"])
    assert z.dtype == torch.bfloat16 and z.shape == (2, 77, 32)
    assert torch.isfinite(z.float()).all()
    # The empty prompt is row 0 of the golden set; bf16 LayerNorm outputs (|z| ~ 1) stay close.
    assert (z[0].float() - text_io["z_penultimate"][0]).abs().max() < 0.1
