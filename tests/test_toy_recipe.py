"""`hummingbird toyworld recipe`: the whole toy recipe end to end at a tiny size, and its argument checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.caption_prior import CaptionMeanPrior, CaptionPriorConfig
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.toyworld.recipe import (
    TRAIN_STAGES,
    add_recipe_parser,
    stage2_guidance,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_recipe_parser(parser.add_subparsers())
    return parser.parse_args(["recipe", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--minutes"),
        (["--minutes", "0"], "positive"),
        (["--steps", "teacher=2"], "must name consistency, distill, teacher"),
        (["--steps", "distill=1,consistency=1", "--teacher", "nowhere"], "not a model folder"),
        (["--minutes", "1", "--vocabulary", "tiny"], "--vocabulary"),
        (["--steps", "teacher=2,student=3"], "teacher=N"),
        (["--minutes", "1", "--set", "nowhere:optim.lr=1"], "STAGE:KEY=VALUE"),
        (["--minutes", "1", "--set", "teacher:optim.lr"], "STAGE:KEY=VALUE"),
        (["--minutes", "1", "--reward-attribute", "smell"], "--reward-attribute"),
        (["--minutes", "1", "--n", "0"], "--n"),
        (["--minutes", "1", "--agreement-prompts", "0"], "--agreement-prompts"),
        (["--minutes", "1", "--calibration-clips", "0"], "--calibration-clips"),
    ],
)
def test_bad_arguments_get_a_one_line_error(tmp_path, argv, message):
    args = _parse(["-o", str(tmp_path / "run"), "--configs", str(CONFIGS), *argv])
    with pytest.raises(ConfigError, match=message):
        args.func(args)


def test_a_missing_configs_folder_says_what_to_pass(tmp_path):
    args = _parse(["-o", str(tmp_path / "run"), "--configs", str(tmp_path / "nowhere"), "--steps", "teacher=1,distill=1,consistency=1"])
    with pytest.raises(ConfigError, match="--configs"):
        args.func(args)


TINY = [
    "all:data.num_workers=0", "all:data.batch_size=1", "all:data.height=32", "all:data.width=32",
    "all:sample.num_inference_steps=1", "all:sample.prompts=[a red circle moving left on a blue background]",
    "all:logging.tensorboard=false", "all:checkpoint.every=0",
]


def test_the_recipe_runs_every_stage_and_tabulates_every_model(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["-o", str(out), "--configs", str(CONFIGS), "--steps", "teacher=1,distill=1,consistency=1", "--device", "cpu"]
    for item in TINY:
        common += ["--set", item]
    args = _parse([*common, "--n", "2", "--eval-batch-size", "2", "--teacher-steps", "2", "--calibration-clips", "2"])
    assert args.func(args) == 0

    for stage in TRAIN_STAGES:
        assert (out / stage / "model" / "model_index.json").is_file(), stage
        assert json.loads((out / stage / "recipe-stage-done.json").read_text())["steps"] == 1
    summary = json.loads((out / "results.json").read_text())
    labels = [row["label"] for row in summary["rows"]]
    assert labels[0] == "real clips" and len(labels) == 10
    assert any("motion reward, 4 steps" in label for label in labels)
    params = {row["model"]: row["parameters"] for row in summary["rows"][1:]}
    # The paper map drops one block per level: the students are smaller than the teacher, and
    # the importance analysis proposes a layout within the paper map's parameter budget.
    assert params["pruned-paper"] == params["distill-paper"] < params["teacher"]
    assert params["distill-importance"] <= params["distill-paper"]
    assert params["consistency"] > params["distill-paper"]  # + the guidance projection
    for row in summary["rows"]:
        assert all(0.0 <= value <= 1.0 for value in row["accuracy"].values())
    agreement = summary["agreement_with_teacher_cfg"]["mean_abs_pixel_difference"]
    assert set(agreement) == {"teacher, no CFG", "pruned, not distilled, CFG", "stage 1 paper map, no CFG", "stage 1 importance layout, no CFG"}
    table = (out / "results.md").read_text()
    assert table.startswith("| model | U-Net params |") and "stage 2, 8 steps" in table
    # One guidance, by default the teacher's own: its rows, stage 1's target, the importance analysis.
    teacher_default = json.loads((out / "teacher" / "model" / "model_index.json").read_text())["defaults"]["guidance_scale"]
    assert f"CFG {teacher_default:g}" in labels[1]
    for stage in ("distill-paper", "distill-importance"):
        assert yaml.safe_load((out / stage / "config.yaml").read_text())["objective"]["guidance_scale"] == teacher_default
    assert yaml.safe_load((out / "importance.yaml").read_text())["analysis"]["guidance_scale"] == teacher_default

    # A rerun resumes: every finished stage is skipped.
    args = _parse([*common, "--n", "1", "--teacher-steps", "1"])
    capsys.readouterr()
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert all(f"[recipe] {stage}: done already" in printed for stage in TRAIN_STAGES)

    # A given teacher skips the teacher stage; --vocabulary core trains and evaluates on the core
    # vocabulary, and every exported model records it. This teacher has a caption prior: every
    # student folder gets it.
    trained = HummingbirdPipeline.from_pretrained(out / "teacher" / "model")
    width = trained.encode_prompt([""]).shape[-1]
    trained.prior = CaptionMeanPrior(CaptionPriorConfig(context_dim=width, hidden_dim=8, grid_frames=2, grid_height=2, grid_width=2))
    given = trained.save_pretrained(tmp_path / "teacher-with-prior")
    core = tmp_path / "core"
    argv = ["-o", str(core), "--configs", str(CONFIGS), "--teacher", str(given), "--vocabulary", "core",
            "--steps", "distill=1,consistency=1", "--device", "cpu", "--n", "2", "--eval-batch-size", "2", "--teacher-steps", "1",
            "--calibration-clips", "2", "--agreement-prompts", "1", "--teacher-guidance", "2", "--set", "distill-importance:objective.guidance_scale=4",
            "--consistency-from", "distill-importance", "--set", "consistency-reward:objective.w_max=3", "--parallel"]
    for item in TINY:
        argv += ["--set", item]
    args = _parse(argv)
    assert args.func(args) == 0
    # --parallel trained each pair of students in two processes, each with its own log.
    for stage in TRAIN_STAGES[1:]:
        assert "trained 1 steps" in (core / stage / "recipe-train.log").read_text(), stage
    distilled = {stage: yaml.safe_load((core / stage / "config.yaml").read_text())["objective"]["guidance_scale"]
                 for stage in ("distill-paper", "distill-importance")}
    assert distilled == {"distill-paper": 2.0, "distill-importance": 4.0}  # a stage's --set wins
    # Stage 2 starts from the chosen student and trains around the teacher's guidance in LCM form (w = 2 - 1).
    for stage, w_max in (("consistency", 1.5), ("consistency-reward", 3.0)):
        config = yaml.safe_load((core / stage / "config.yaml").read_text())
        assert config["objective"]["student"] == str(core / "distill-importance" / "model")
        assert (config["objective"]["w_min"], config["objective"]["w_max"]) == (0.5, w_max)
        assert json.loads((core / stage / "model" / "model_index.json").read_text())["defaults"]["guidance_scale"] == 1.0
    assert not (core / "teacher").exists()
    summary = json.loads((core / "results.json").read_text())
    assert summary["stages"]["teacher"] == {"given": str(given)}
    assert summary["agreement_with_teacher_cfg"]["prompts"] == 1
    for stage in TRAIN_STAGES[1:]:
        index = json.loads((core / stage / "model" / "model_index.json").read_text())
        assert index["extra"]["toy_vocabulary"] == "core", stage
        assert index["components"]["prior"] == "CaptionMeanPrior", stage
    assert (core / "pruned-paper" / "prior").is_dir()


@pytest.mark.parametrize(("teacher", "expected"), [(12.0, (5.5, 16.5, 11.0)), (3.0, (1.0, 3.0, 2.0)), (1.0, (0.0, 0.0, 0.0)), (0.5, (0.0, 0.0, 0.0))])
def test_stage2_trains_around_the_teachers_guidance_in_lcm_form(teacher, expected):
    assert stage2_guidance(teacher) == pytest.approx(expected)


def test_a_failed_stage_side_by_side_names_its_log_and_the_other_one_finishes(tmp_path):
    """Two tiny stage-1 runs with --parallel from a tiny random teacher: one config is broken."""
    import torch

    from hummingbird_t2v.models.unet import UNet3D
    from hummingbird_t2v.models.unet_config import get_unet_preset
    from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
    from hummingbird_t2v.models.word_text_encoder import (
        WordTextEncoder,
        WordTextEncoderConfig,
    )
    from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.toyworld.recipe import RecipeError
    torch.manual_seed(0)
    text_encoder = WordTextEncoder(WordTextEncoderConfig(vocabulary=("a", "red", "circle"), width=32, layers=1, heads=2))
    unet = UNet3D(get_unet_preset("tiny-vc2").replace(context_dim=32, channel_mult=(1, 2, 2)))
    vae = VideoVAE(VAEConfig(base_channels=8, channel_multipliers=(1, 2), norm_num_groups=8, sample_size=32))
    defaults = SamplingDefaults(num_inference_steps=2, guidance_scale=3.0, fps=8, num_frames=4, height=32, width=32)
    HummingbirdPipeline(unet, vae, text_encoder, PipelineConfig(sampler="ddim", defaults=defaults)).save_pretrained(tmp_path / "teacher")
    out = tmp_path / "run"
    argv = ["-o", str(out), "--configs", str(CONFIGS), "--teacher", str(tmp_path / "teacher"), "--vocabulary", "core",
            "--steps", "distill=1,consistency=1", "--device", "cpu", "--calibration-clips", "1", "--parallel",
            "--set", "distill-paper:data.batch_size=0"]
    for item in TINY:
        argv += ["--set", item]
    args = _parse(argv)
    with pytest.raises(RecipeError, match=r"stage distill-paper failed \(exit 2\); its output is in .*distill-paper/recipe-train.log"):
        args.func(args)
    assert "data.batch_size must be >= 1" in (out / "distill-paper" / "recipe-train.log").read_text()
    assert not (out / "distill-paper" / "recipe-stage-done.json").exists()
    assert json.loads((out / "distill-importance" / "recipe-stage-done.json").read_text())["steps"] == 1
