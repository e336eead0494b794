"""Frame-wise VAE: golden tiny VAE vectors, the LDM -> diffusers key converter, shapes and dtypes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.checkpoints.vae_keys import convert_ldm_vae_state_dict, load_ldm_vae_weights
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def tiny_ldm_weights(golden_dir):
    return {k: v.float() for k, v in load_file(golden_dir / "tiny_vae.safetensors").items()}


@pytest.fixture(scope="module")
def tiny_vae(golden_dir, tiny_ldm_weights):
    vae_cfg = json.loads((golden_dir / "tiny_configs.json").read_text())["vae"]
    vae = VideoVAE.from_ldm_config(vae_cfg["ddconfig"], vae_cfg["embed_dim"])
    load_ldm_vae_weights(vae, tiny_ldm_weights)
    return vae.eval()


@pytest.fixture(scope="module")
def vae_io(golden_dir):
    # clone: safetensors views have odd alignment, which changes CPU BLAS paths slightly
    return {k: v.clone() for k, v in load_file(golden_dir / "tiny_vae_io.safetensors").items()}


def test_tiny_config_from_ldm_matches_preset_and_param_count(golden_dir, tiny_vae):
    vae_cfg = json.loads((golden_dir / "tiny_configs.json").read_text())["vae"]
    assert tiny_vae.config == VAEConfig.preset("tiny")
    assert sum(p.numel() for p in tiny_vae.parameters()) == vae_cfg["n_params"]


@torch.no_grad()
def test_encoder_matches_golden(tiny_vae, vae_io):
    ae = tiny_vae.autoencoder
    enc_h = ae.encoder(vae_io["frames"])
    torch.testing.assert_close(enc_h, vae_io["enc_h"], **TOL)
    torch.testing.assert_close(ae.quant_conv(enc_h), vae_io["moments"], **TOL)
    posterior = ae.encode(vae_io["frames"]).latent_dist
    torch.testing.assert_close(posterior.mean, vae_io["posterior_mean"], **TOL)
    torch.testing.assert_close(posterior.logvar, vae_io["posterior_logvar"], **TOL)
    torch.testing.assert_close(tiny_vae.encode_frames(vae_io["frames"]), vae_io["latent_mode_scaled"], **TOL)


@torch.no_grad()
def test_video_encode_folds_frames_into_batch(tiny_vae, vae_io):
    # The 3 golden images as one 3-frame video: latents must be the per-image latents on dim 2.
    video = vae_io["frames"].permute(1, 0, 2, 3).unsqueeze(0)
    latents = tiny_vae.encode(video, chunk_size=2)
    assert latents.shape == (1, 4, 3, 4, 6)
    torch.testing.assert_close(latents[0].permute(1, 0, 2, 3), vae_io["latent_mode_scaled"], **TOL)


@torch.no_grad()
def test_decoder_matches_golden(tiny_vae, vae_io):
    torch.testing.assert_close(tiny_vae.autoencoder.decode(vae_io["z"]).sample, vae_io["dec"], **TOL)
    # dec5 is a scaled 5-D latent decoded frame by frame; chunking must not change the result.
    for chunk_size in (1, 8, None):
        torch.testing.assert_close(tiny_vae.decode(vae_io["z5_scaled"], chunk_size=chunk_size), vae_io["dec5"], **TOL)


@torch.no_grad()
def test_sampled_encode_is_seeded_and_differs_from_mode(tiny_vae, vae_io):
    video = vae_io["frames"].permute(1, 0, 2, 3).unsqueeze(0)
    first = tiny_vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    again = tiny_vae.encode(video, sample=True, generator=torch.Generator().manual_seed(0))
    mode = tiny_vae.encode(video)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, mode)


def test_sd_vae_param_count_and_manifest_conversion(reference_dir):
    config = VAEConfig.from_ldm_config(
        {"double_z": True, "z_channels": 4, "resolution": 512, "in_channels": 3, "out_ch": 3, "ch": 128,
         "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0},
        embed_dim=4,
    )
    assert config == VAEConfig.preset("sd")
    with torch.device("meta"):
        vae = VideoVAE(config)
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    manifest = {}
    for line in (reference_dir / "keys_vae.tsv").read_text().splitlines():
        name, shape, _dtype = line.split("\t")
        manifest[name] = torch.empty(tuple(int(s) for s in shape.split(",")), device="meta")
    assert len(manifest) == 248
    converted = convert_ldm_vae_state_dict(manifest, config)
    # The converter checks that every manifest key is consumed and every diffusers key produced
    # with its shape; repeat the second half here so the test does not rely on that alone.
    expected = {k: tuple(v.shape) for k, v in vae.autoencoder.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected


def test_converter_rejects_mismatched_checkpoints(tiny_ldm_weights):
    tiny = VAEConfig.preset("tiny")
    with pytest.raises(CheckpointError, match="first_stage_model"):
        convert_ldm_vae_state_dict({f"first_stage_model.{k}": v for k, v in tiny_ldm_weights.items()}, tiny)
    incomplete = dict(tiny_ldm_weights)
    del incomplete["decoder.up.0.block.2.conv2.weight"]
    with pytest.raises(CheckpointError, match="lacks 1"):
        convert_ldm_vae_state_dict(incomplete, tiny)
    reshaped = dict(tiny_ldm_weights)
    reshaped["decoder.conv_out.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError, match="do not fit the VAE: 1 shape mismatch"):
        convert_ldm_vae_state_dict(reshaped, tiny)
    with pytest.raises(CheckpointError):
        convert_ldm_vae_state_dict(tiny_ldm_weights, VAEConfig.preset("sd"))


def test_config_round_trip_and_errors():
    config = VAEConfig.preset("tiny")
    assert VAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError):
        VAEConfig.from_dict({"width": 3})
    with pytest.raises(ConfigError):
        VAEConfig.preset("xl")
    with pytest.raises(ConfigError, match="attn_resolutions"):
        VAEConfig.from_ldm_config({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 4,
                                   "attn_resolutions": [16]}, embed_dim=4)


def test_bad_input_shapes_raise_config_error(tiny_vae):
    with pytest.raises(ConfigError, match="divisible by 8"):
        tiny_vae.encode(torch.zeros(1, 3, 1, 30, 48))
    with pytest.raises(ConfigError, match="layout"):
        tiny_vae.decode(torch.zeros(1, 4, 6, 8))
    with pytest.raises(ConfigError, match="chunk_size"):
        tiny_vae.decode(torch.zeros(1, 4, 1, 4, 6), chunk_size=0)


@torch.no_grad()
def test_bfloat16_round_trip(tiny_vae, vae_io):
    vae = VideoVAE(tiny_vae.config)
    vae.load_state_dict(tiny_vae.state_dict())
    vae = vae.to(torch.bfloat16)
    latents = vae.encode(vae_io["frames"][:2].permute(1, 0, 2, 3).unsqueeze(0))
    video = vae.decode(latents)
    assert latents.dtype == video.dtype == torch.bfloat16
    assert video.shape == (1, 3, 2, 32, 48)
    # bf16 keeps ~3 significant digits; through ~30 layers that is a few percent of the range.
    reference_latents = tiny_vae.encode(vae_io["frames"][:2].permute(1, 0, 2, 3).unsqueeze(0))
    assert (latents.float() - reference_latents).abs().max() < 0.05 * reference_latents.abs().max()
    reference = tiny_vae.decode(latents.float())
    assert (video.float() - reference).abs().max() < 0.1 * reference.abs().max()
