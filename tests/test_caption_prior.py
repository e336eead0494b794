"""CaptionMeanPrior: the caption's mean latent, how it is fitted, and where the pipeline starts from it."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

import hummingbird_t2v.pipelines.hummingbird as pipeline_module
from hummingbird_t2v.cli import main as cli_main
from hummingbird_t2v.diffusion.ddim import ddim_timesteps
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.caption_prior import CaptionMeanPrior, CaptionPriorConfig
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
from hummingbird_t2v.models.word_text_encoder import (
    WordTextEncoder,
    WordTextEncoderConfig,
)
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.training.caption_prior import fit_caption_prior

WIDTH = 32
WORDS = ("a", "red", "blue", "circle", "square", "moving", "left", "right", "on", "background")  # others read as <unk>


def _tiny_pipeline(prior: CaptionMeanPrior | None = None) -> HummingbirdPipeline:
    torch.manual_seed(0)
    text_encoder = WordTextEncoder(WordTextEncoderConfig(vocabulary=WORDS, width=WIDTH, layers=1, heads=2))
    unet = UNet3D(get_unet_preset("tiny-vc2").replace(context_dim=WIDTH, channel_mult=(1, 2, 2)))
    vae = VideoVAE(VAEConfig(base_channels=8, channel_multipliers=(1, 2), norm_num_groups=8, sample_size=32))
    defaults = SamplingDefaults(num_inference_steps=2, guidance_scale=3.0, fps=8, num_frames=4, height=32, width=32)
    config = PipelineConfig(sampler="ddim", defaults=defaults, use_scale=False)
    return HummingbirdPipeline(unet, vae, text_encoder, config, prior=prior)


def _capture_start(monkeypatch) -> list[torch.Tensor]:
    """Replace the DDIM sampler with one that records the latents it starts from."""
    starts: list[torch.Tensor] = []

    def record(unet, latents, *args, **kwargs):
        starts.append(latents.clone())
        return latents

    monkeypatch.setattr(pipeline_module, "sample_ddim_cfg", record)
    return starts


def test_prior_resizes_its_grid_to_any_latent_size_and_checks_the_token_width():
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=WIDTH, grid_frames=2, grid_height=2, grid_width=2))
    out = prior(torch.randn(3, 5, WIDTH), 4, 8, 6)
    assert out.shape == (3, 4, 4, 8, 6)
    assert CaptionPriorConfig.from_dict(prior.config.to_dict()) == prior.config
    with pytest.raises(ConfigError, match="another text encoder"):
        prior(torch.randn(3, 5, WIDTH + 1), 4, 8, 8)
    with pytest.raises(ConfigError, match="grid_frames"):
        CaptionPriorConfig(grid_frames=0)


def test_fitting_recovers_each_captions_mean_latent():
    """Two captions, each with its own mean latent plus noise: the fit lands on the means."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 6, WIDTH, generator=generator)
    means = torch.randn(2, 4, 2, 4, 4, generator=generator)
    which = torch.arange(400) % 2
    latents = means[which] + 0.5 * torch.randn(400, 4, 2, 4, 4, generator=generator)
    config = CaptionPriorConfig(context_dim=WIDTH, hidden_dim=32, grid_frames=2, grid_height=4, grid_width=4)
    prior, fit = fit_caption_prior(tokens[which], latents, config=config, steps=300, batch_size=64, lr=3e-3)
    with torch.no_grad():
        predicted = prior(tokens, 2, 4, 4)
    assert (predicted - means).abs().max() < 0.25
    # Held out, the prior leaves only the noise (variance 0.25); the dataset mean also leaves the
    # spread between the two means.
    assert fit.heldout_mse < 0.3 < fit.heldout_mse_of_dataset_mean
    assert 0 < fit.explained < 1 and "explained" in fit.summary()


def test_fitting_refuses_mismatched_or_too_few_pairs():
    with pytest.raises(ConfigError, match="same n"):
        fit_caption_prior(torch.randn(3, 2, WIDTH), torch.randn(4, 4, 1, 2, 2))
    with pytest.raises(ConfigError, match="held-out"):
        fit_caption_prior(torch.randn(3, 2, WIDTH), torch.randn(3, 4, 1, 2, 2), heldout_fraction=0.01)


def test_the_start_moves_by_the_prior_mean_scaled_to_the_first_timestep(monkeypatch):
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=WIDTH, grid_frames=4))
    torch.nn.init.normal_(prior.mlp[-1].bias)  # a mean far from zero
    pipe = _tiny_pipeline(prior)
    starts = _capture_start(monkeypatch)
    prompt = "a red circle moving left on a blue background"
    for strength in (0.0, 1.0, 2.0):
        pipe(prompt, generator=torch.Generator().manual_seed(1), prior_strength=strength, output_type="latent", progress=False)
    noise = torch.randn(starts[0].shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(starts[0], noise)  # strength 0: the plain start
    first = int(ddim_timesteps(2)[0])
    with torch.no_grad():
        mean = prior(pipe.encode_prompt([prompt]), *starts[0].shape[2:])
    shift = pipe._alphas_cumprod()[first].sqrt() * mean
    torch.testing.assert_close(starts[1], noise + shift)
    torch.testing.assert_close(starts[2], noise + 2 * shift)


def test_a_folder_with_a_prior_saves_loads_and_reports_it(tmp_path, monkeypatch):
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=WIDTH, grid_frames=4))
    torch.nn.init.normal_(prior.mlp[-1].bias)
    pipe = _tiny_pipeline(prior)
    folder = pipe.save_pretrained(tmp_path / "model")
    assert json.loads((folder / "model_index.json").read_text())["components"]["prior"] == "CaptionMeanPrior"
    loaded = HummingbirdPipeline.from_pretrained(folder)
    assert isinstance(loaded.prior, CaptionMeanPrior)
    starts = _capture_start(monkeypatch)
    for model in (pipe, loaded):
        model("a red circle", generator=torch.Generator().manual_seed(0), output_type="latent", progress=False)
    torch.testing.assert_close(starts[0], starts[1])
    # A folder without one still loads, with no prior.
    assert HummingbirdPipeline.from_pretrained(_tiny_pipeline().save_pretrained(tmp_path / "plain")).prior is None
    assert cli_main(["info", str(folder)]) == 0


def test_the_model_folder_can_carry_its_own_prior_strength(tmp_path, monkeypatch):
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=WIDTH, grid_frames=4))
    torch.nn.init.normal_(prior.mlp[-1].bias)
    pipe = _tiny_pipeline(prior)
    pipe.config = dataclasses.replace(pipe.config, defaults=dataclasses.replace(pipe.config.defaults, prior_strength=2.0))
    loaded = HummingbirdPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "model"))
    assert loaded.config.defaults.prior_strength == 2.0
    starts = _capture_start(monkeypatch)
    for strength in (None, 2.0, 1.0):
        loaded("a red circle", generator=torch.Generator().manual_seed(0), prior_strength=strength, output_type="latent", progress=False)
    torch.testing.assert_close(starts[0], starts[1])  # the folder's default is 2
    assert not torch.allclose(starts[0], starts[2])  # and a call still overrides it


def test_train_prior_adds_a_prior_to_a_copy_of_the_folder(tmp_path, capsys):
    model = _tiny_pipeline().save_pretrained(tmp_path / "model")
    config = tmp_path / "data.yaml"
    toyworld = {"size": 64, "seed": 5, "vocabulary": "core", "fps": 8}
    config.write_text(yaml.safe_dump({"data": {"kind": "toyworld", "video_length": 4, "height": 32, "width": 32, "toyworld": toyworld}}))
    out = tmp_path / "with-prior"
    argv = ["train", "prior", "--model", str(model), "--config", str(config), "-o", str(out), "--clips", "20", "--steps", "5", "--batch-size", "8"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out MSE" in printed and str(out) in printed
    loaded = HummingbirdPipeline.from_pretrained(out)
    assert isinstance(loaded.prior, CaptionMeanPrior) and loaded.prior.config.grid_frames == 4
    assert not (model / "prior").exists()  # the input folder is left as it was
    # Writing over the input, or into a non-empty folder without --overwrite, is refused.
    assert cli_main([*argv[:6], "-o", str(model), *argv[8:]]) == 2
    assert "--output must differ" in capsys.readouterr().err
    assert cli_main(argv) == 2
    assert "already exists" in capsys.readouterr().err

