"""`hummingbird prune` end to end: U-Net files and full models in, student folders out; --analyze; errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.checkpoints.folder import save_component
from hummingbird_t2v.cli import main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D, count_parameters
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.pruning.cli import parse_count
from hummingbird_t2v.pruning.layouts import load_layout
from hummingbird_t2v.pruning.loading import load_model_or_unet

MICRO = UNetConfig(model_channels=32, channel_mult=(1, 2), attention_resolutions=(1,), num_head_channels=16, context_dim=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(*args: str, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_prune_a_bare_unet_file_into_a_unet_folder(golden_dir, tmp_path, capsys):
    teacher_file = golden_dir / "tiny_vc2_unet.safetensors"
    code, out, _ = run("prune", "--teacher", teacher_file, "--layout", "hb-0.9b", "-o", tmp_path / "s", capsys=capsys)
    assert code == 0
    assert "4,061,284" in out and "2,742,180" in out and "GFLOPs" in out
    assert "3→2" in out and "freshly initialised: time_cond_proj.weight" in out
    student = load_model_or_unet(tmp_path / "s")
    assert student.pipeline is None and count_parameters(student.unet) == 2_742_180
    teacher = load_file(teacher_file)
    weights = student.unet.state_dict()
    assert torch.equal(weights["input_blocks.7.0.in_layers.2.weight"], teacher["input_blocks.10.0.in_layers.2.weight"].float())
    assert torch.equal(weights["output_blocks.5.1.proj_in.weight"], teacher["output_blocks.8.1.proj_in.weight"].float())
    assert load_layout(tmp_path / "s" / "prune_layout.yaml").name == "hb-0.9b"


def test_prune_a_full_checkpoint_into_a_model_folder(golden_dir, tmp_path, capsys):
    code, out, _ = run("prune", "--teacher", golden_dir / "tiny_vc2_lightning.ckpt", "--layout", "hb-0.7b", "--text-heads", "4",
                       "--no-guidance-projection", "-o", tmp_path / "m", capsys=capsys)
    assert code == 0 and "model folder, sampler ddim" in out and "freshly initialised: none" in out
    pipe = HummingbirdPipeline.from_pretrained(tmp_path / "m")
    assert pipe.unet.config.use_middle_block is False and pipe.unet.config.time_cond_proj_dim is None
    teacher = load_model_or_unet(golden_dir / "tiny_vc2_lightning.ckpt", text_num_heads=4).pipeline
    for ours, theirs in ((pipe.vae, teacher.vae), (pipe.text_encoder, teacher.text_encoder)):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


def test_analyze_proposes_a_layout_that_prune_accepts(tmp_path, capsys):
    torch.manual_seed(0)
    teacher = UNet3D(MICRO)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_component(tmp_path / "teacher", teacher, MICRO.to_dict())
    budget = count_parameters(UNet3D(MICRO.replace(num_res_blocks=1)))
    code, out, _ = run("prune", "--analyze", "--teacher", tmp_path / "teacher", "--budget-params", budget,
                       "--calibration-samples", "2", "--calibration-size", "1x8x8", "--no-guidance-projection", "--keep-middle",
                       "--device", "cpu", "-o", tmp_path / "proposal.yaml", capsys=capsys)
    assert code == 0
    assert "change if skipped" in out and "required (changes width 32→64)" in out and "proposal:" in out
    layout = load_layout(tmp_path / "proposal.yaml")
    # With the middle block kept, the one-block-per-level budget leaves exactly one block per level.
    assert layout.blocks_per_level == (1, 1) and layout.middle_block and layout.time_cond_proj_dim is None

    code, out, _ = run("prune", "--teacher", tmp_path / "teacher", "--layout", tmp_path / "proposal.yaml", "-o", tmp_path / "student", capsys=capsys)
    assert code == 0
    assert count_parameters(load_model_or_unet(tmp_path / "student").unet) <= budget


def test_analyze_by_caption_records_it_and_noises_calibration_as_the_teacher_was_trained(tmp_path, capsys):
    import argparse
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from hummingbird_t2v.pruning.cli import _calibration_batch

    torch.manual_seed(0)
    teacher = UNet3D(MICRO)
    save_component(tmp_path / "teacher", teacher, MICRO.to_dict())
    code, out, _ = run("prune", "--analyze", "--teacher", tmp_path / "teacher", "--score", "caption", "--calibration-samples", "2",
                       "--calibration-size", "1x8x8", "--no-guidance-projection", "--device", "cpu", "-o", tmp_path / "p.yaml", capsys=capsys)
    assert code == 0 and "relative change of the caption's part" in out
    assert "score: caption" in (tmp_path / "p.yaml").read_text()

    # Calibration latents are noised with the dynamic latent rescale only where the teacher trained with it.
    latents = torch.randn(2, 4, 1, 8, 8)
    save_file({"latents": latents, "context": torch.randn(2, 5, 16), "uncond_context": torch.randn(1, 5, 16)}, str(tmp_path / "c.safetensors"))
    args = argparse.Namespace(seed=0, calibration=tmp_path / "c.safetensors", fps=8)
    noisy = {}
    for use_scale in (True, False):
        model = SimpleNamespace(pipeline=SimpleNamespace(config=SimpleNamespace(use_scale=use_scale)))
        noisy[use_scale] = _calibration_batch(args, model, MICRO, (1, 8, 8)).noisy_latents
    bare = _calibration_batch(args, SimpleNamespace(pipeline=None), MICRO, (1, 8, 8)).noisy_latents
    assert torch.equal(bare, noisy[True]) and not torch.allclose(noisy[True], noisy[False])


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ([], "pass --layout"),
        (["--layout", "hb-0.9b"], "pass -o/--output"),
        (["--layout", "hb-1.5b", "-o", "OUT"], "'hb-1.5b' is neither hb-0.9b nor hb-0.7b"),
        (["--analyze", "--budget-params", "lots"], "cannot read 'lots' as a count"),
        (["--analyze", "--calibration-size", "8x32", "--budget-params", "1M"], "FRAMESxHEIGHTxWIDTH"),
        (["--analyze", "--layout", "hb-0.9b"], "leave out --layout"),
    ],
)
def test_bad_arguments_give_one_line_errors(extra, fragment, golden_dir, tmp_path, capsys):
    args = [a.replace("OUT", str(tmp_path / "o")) for a in extra]
    code, _, err = run("prune", "--teacher", golden_dir / "tiny_vc2_unet.safetensors", *args, capsys=capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1


def test_shape_rule_violations_and_existing_outputs_are_reported(golden_dir, tmp_path, capsys):
    layout = tmp_path / "bad.yaml"
    layout.write_text(
        "levels:\n"
        "- {encoder: [0], decoder: [0, 2]}\n- {encoder: [0], decoder: [0, 2]}\n"
        "- {encoder: [0], decoder: [0, 1]}\n- {encoder: [0], decoder: [1, 2]}\n"
    )
    teacher = golden_dir / "tiny_vc2_unet.safetensors"
    code, _, err = run("prune", "--teacher", teacher, "--layout", layout, "-o", tmp_path / "x", capsys=capsys)
    # Tiny widths 32/32/64/64: level 2's last slot takes 64 + 32, which only teacher block 5 does.
    assert code == 2 and "student output block 3 (level 2, decoder slot 1) takes 64 + 32 = 96" in err and "fit: [5]" in err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    code, _, err = run("prune", "--teacher", teacher, "--layout", "hb-0.9b", "-o", tmp_path / "taken", capsys=capsys)
    assert code == 2 and "--overwrite" in err


def test_parse_count():
    assert parse_count("945,209,220") == 945_209_220
    assert parse_count("900M") == 900_000_000 and parse_count("0.9B") == 900_000_000
    assert parse_count("8.2T") == 8_200_000_000_000 and parse_count("1e9") == 1_000_000_000
    for bad in ("", "-5", "12Q"):
        with pytest.raises(ConfigError):
            parse_count(bad)


def test_layout_file_in_output_is_readable(tmp_path: Path):
    # load_layout accepts the YAML the prune command writes next to the weights, analysis section included.
    text = "# comment\nname: x\nlevels:\n- {encoder: [0], decoder: [0, 2]}\n- {encoder: [1], decoder: [1, 2]}\nmiddle_block: false\ntime_cond_proj_dim: null\nanalysis: {anything: 1}\n"
    (tmp_path / "l.yaml").write_text(text)
    layout = load_layout(tmp_path / "l.yaml", MICRO)
    assert layout.encoder == ((0,), (1,)) and not layout.middle_block


def test_a_pruned_model_folder_keeps_the_teachers_sampler_settings(tmp_path, capsys):
    """The toy teacher samples 8 frames of 64x64 in 25 steps: its untrained student must too, unless
    the layout adds a guidance projection (then it is a consistency student). Both keep its caption prior."""
    from hummingbird_t2v.models.caption_prior import (
        CaptionMeanPrior,
        CaptionPriorConfig,
    )
    from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
    from hummingbird_t2v.models.word_text_encoder import (
        WordTextEncoder,
        WordTextEncoderConfig,
    )
    from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults

    torch.manual_seed(0)
    text = WordTextEncoder(WordTextEncoderConfig(vocabulary=("a", "red", "circle"), width=16, layers=1, heads=2))
    vae = VAEConfig(base_channels=8, channel_multipliers=(1, 2), norm_num_groups=8, sample_size=32)
    defaults = SamplingDefaults(num_inference_steps=25, guidance_scale=7.5, fps=8, num_frames=8, height=32, width=32)
    config = PipelineConfig(sampler="ddim", defaults=defaults)
    prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=16, hidden_dim=8, grid_frames=2, grid_height=2, grid_width=2))
    HummingbirdPipeline(UNet3D(MICRO), VideoVAE(vae), text, config, prior=prior).save_pretrained(tmp_path / "teacher")
    layout = tmp_path / "layout.yaml"
    for name, projection in (("same", "null"), ("guided", "256")):
        layout.write_text("levels:\n- {encoder: [0], decoder: [0, 2]}\n- {encoder: [0], decoder: [1, 2]}\n"
                          f"middle_block: true\ntime_cond_proj_dim: {projection}\n")
        code, _, err = run("prune", "--teacher", tmp_path / "teacher", "--layout", layout, "-o", tmp_path / name, capsys=capsys)
        assert code == 0, err
    assert HummingbirdPipeline.from_pretrained(tmp_path / "same").config == config
    guided = HummingbirdPipeline.from_pretrained(tmp_path / "guided").config
    assert guided.sampler == "consistency" and guided != config
    for name in ("same", "guided"):
        carried = HummingbirdPipeline.from_pretrained(tmp_path / name).prior
        assert carried is not None
        assert all(torch.equal(value, prior.state_dict()[key]) for key, value in carried.state_dict().items())
