"""The toy world's small components: the shipped VAE and text encoder, and how they are trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hummingbird_t2v.checkpoints.folder import load_component
from hummingbird_t2v.data.sampling import frames_to_tensor
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.registry import build_component
from hummingbird_t2v.models.vae import SD_SCALING_FACTOR
from hummingbird_t2v.models.word_text_encoder import WordTextEncoder, WordTextEncoderConfig, split_words
from hummingbird_t2v.toyworld import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.components import (
    TOY_TEXT_ENCODER_DIR,
    TOY_VAE_DIR,
    ToyVAETraining,
    WordEncoderTraining,
    latent_scaling_factor,
    load_toy_text_encoder,
    load_toy_vae,
    reconstruction_psnr,
    save_toy_vae,
    toy_caption_vocabulary,
    train_toy_vae,
    train_word_text_encoder,
)
from hummingbird_t2v.toyworld.text_encoder_study import unseen_caption

FRESH_WORLD_SEED = 3  # not the training (0), held-out (1) or evaluation (2) world
PSNR_FLOOR = 27.0  # dB on fresh clean clips; the shipped VAE measured 29.1 on 500 held-out clips


# ------------------------------------------------------------------------------------- the VAE
@pytest.fixture(scope="module")
def toy_vae():
    return load_toy_vae()


def test_the_shipped_vae_is_small_with_factor_4_and_its_own_scaling_factor(toy_vae):
    assert toy_vae.config.downsample_factor == 4
    assert toy_vae.config.latent_channels == 4
    assert toy_vae.scaling_factor != SD_SCALING_FACTOR
    assert sum(p.numel() for p in toy_vae.parameters()) < 2_000_000
    assert sum(f.stat().st_size for f in TOY_VAE_DIR.iterdir()) < 5_000_000
    record = json.loads((TOY_VAE_DIR / "training.json").read_text())
    assert record["report"]["scaling_factor"] == pytest.approx(toy_vae.scaling_factor)


def test_the_shipped_vae_reconstructs_fresh_clips_with_unit_scale_latents(toy_vae):
    clips = [ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED)).clip(i).frames for i in range(4)]
    assert reconstruction_psnr(toy_vae, clips) > PSNR_FLOOR
    with torch.no_grad():
        latents = toy_vae.encode(frames_to_tensor(clips[0])[None])
    assert latents.shape == (1, 4, 16, 16, 16)
    # Scaled latents of unseen clips have roughly unit spread, which is what the scaling factor is for.
    assert 0.6 < float(latents.std()) < 1.6


def test_vae_training_runs_records_its_scaling_factor_and_reloads(tmp_path, monkeypatch):
    import hummingbird_t2v.toyworld.components as components

    few = {"clean": [ToyWorld(ToyWorldConfig(seed=1)).clip(0).frames]}
    monkeypatch.setattr(components, "_held_out_clips", lambda: few)
    config = ToyVAETraining(base_channels=8, channel_multipliers=(1, 2), steps=2, clips_per_batch=2, threads=1)
    vae, report = train_toy_vae(config, log=None)
    assert vae.config.downsample_factor == 2 and set(report.psnr) == {"clean"}
    assert vae.scaling_factor == pytest.approx(report.scaling_factor)
    # The factor is measured on the raw latents, so re-measuring the saved VAE gives it back.
    assert latent_scaling_factor(vae, few["clean"]) == pytest.approx(vae.scaling_factor, rel=1e-4)
    save_toy_vae(vae, tmp_path / "vae", config, report)
    reloaded = load_toy_vae(tmp_path / "vae")
    assert reloaded.config == vae.config
    for name, tensor in vae.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor)
    with pytest.raises(CheckpointError):
        load_toy_vae(tmp_path / "missing")


# ---------------------------------------------------------------------------- the text encoder
def _tiny_encoder(**overrides) -> WordTextEncoder:
    torch.manual_seed(0)
    config = WordTextEncoderConfig(vocabulary=("a", "red", "circle", "left"), width=16, layers=1, heads=2, context_length=6)
    return WordTextEncoder(WordTextEncoderConfig(**{**config.to_dict(), **overrides}))


def test_tokenizer_splits_words_marks_unknown_ones_and_truncates():
    encoder = _tiny_encoder()
    assert split_words("A Grass-green DISC, drifting!") == ["a", "grass", "green", "disc", "drifting"]
    ids, mask = encoder.tokenizer(["a red circle", "a blue circle left red circle", ""])
    # <start>=2, <end>=3, <unk>=1, padding 0; words from 4 on in vocabulary order.
    assert ids[0].tolist() == [2, 4, 5, 6, 3, 0]
    assert ids[1].tolist() == [2, 4, 1, 6, 7, 3]  # cut to context_length, <end> kept
    assert ids[2].tolist() == [2, 3, 0, 0, 0, 0]
    assert mask.sum(1).tolist() == [5, 6, 2]
    assert encoder.unknown_words("a blue circle") == ["blue"]


def test_encode_returns_every_position_and_ignores_padding_content():
    encoder = _tiny_encoder().eval()
    context = encoder.encode(["a red circle", ""])
    assert context.shape == (2, 6, 16) and torch.isfinite(context).all()
    ids, mask = encoder.tokenizer(["a red circle"])
    changed = ids.clone()
    changed[0, -1] = 7  # a different id behind the padding mask: the prompt's positions do not see it
    with torch.no_grad():
        torch.testing.assert_close(encoder(ids, mask)[mask], encoder(changed, mask)[mask])
        # Training mode (no fused fast path) computes the same thing.
        torch.testing.assert_close(encoder.train()(ids, mask), encoder.eval()(ids, mask), atol=1e-5, rtol=1e-5)


def test_word_encoder_config_round_trips_through_the_registry_and_a_folder(tmp_path):
    from hummingbird_t2v.checkpoints.folder import save_component

    encoder = _tiny_encoder().eval()
    config = json.loads(json.dumps(encoder.config.to_dict()))
    rebuilt = build_component("WordTextEncoder", config)
    assert rebuilt.config == encoder.config
    save_component(tmp_path / "te", encoder, encoder.config.to_dict())
    loaded = load_component(tmp_path / "te", lambda c: build_component("WordTextEncoder", c))
    torch.testing.assert_close(loaded.encode(["a red circle left"]), encoder.encode(["a red circle left"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"vocabulary": ("red", "red")}, "repeated"), ({"vocabulary": ("grass-green",)}, "single lower-case"),
     ({"width": 15}, "divisible"), ({"context_length": 2}, "context_length")],
)
def test_bad_word_encoder_configs_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _tiny_encoder(**overrides)


def test_the_toy_vocabulary_covers_every_caption_word():
    vocabulary = set(toy_caption_vocabulary(samples=200))
    world = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED))
    for index in range(50):
        clip = world.clip(index)
        assert set(split_words(clip.caption)) <= vocabulary
        assert set(split_words(clip.canonical_caption)) <= vocabulary


def test_word_encoder_training_runs(monkeypatch):
    import hummingbird_t2v.toyworld.components as components

    monkeypatch.setattr(components, "toy_caption_vocabulary", lambda: toy_caption_vocabulary(samples=50))
    encoder, record = train_word_text_encoder(WordEncoderTraining(width=16, heads=2, layers=1, steps=3, batch_size=8, threads=1), log=None)
    assert record["parameters"] == sum(p.numel() for p in encoder.parameters())
    assert encoder.encode(["a red circle moving left on a blue background"]).shape == (1, 40, 16)


@pytest.fixture(scope="module")
def toy_text_encoder():
    return load_toy_text_encoder()


def _pooled(encoder: WordTextEncoder, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        ids, mask = encoder.tokenizer(prompts)
        hidden = encoder(ids, mask)
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


def test_the_shipped_text_encoder_maps_paraphrases_to_their_scene(toy_text_encoder):
    assert (TOY_TEXT_ENCODER_DIR / "model.safetensors").stat().st_size < 3_000_000
    gallery = [
        "a red circle moving left on a blue background",
        "a blue circle moving left on a red background",
        "a red circle moving right on a blue background",
        "a red square moving left on a blue background",
    ]
    query = "a crimson disc drifting left against an azure backdrop"
    similarity = _pooled(toy_text_encoder, [query]) @ _pooled(toy_text_encoder, gallery).T
    assert int(similarity.argmax()) == 0


def test_unseen_wordings_use_no_toy_caption_word_for_colors_and_shapes(toy_text_encoder):
    scene = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED)).scene(0)
    caption = unseen_caption(scene, np.random.default_rng(0))
    first = scene.objects[0]
    known = set(toy_text_encoder.tokenizer.ids)
    assert first.color not in split_words(caption) and first.shape not in split_words(caption)
    assert any(word not in known for word in split_words(caption))
