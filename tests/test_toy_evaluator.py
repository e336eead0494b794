"""The toy evaluator: VBench flickering, the video classifier, the shipped weights, `toyworld eval`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.eval.flicker import mean_temporal_flickering, temporal_flickering
from hummingbird_t2v.toyworld import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.builtin import builtin_model_folder, model_toy_vocabulary
from hummingbird_t2v.toyworld.eval_cli import add_eval_parser
from hummingbird_t2v.toyworld.evaluator import (
    EVAL_WORLD_SEED,
    EVALUATOR_ATTRIBUTES,
    TOY_EVALUATOR_DIR,
    EvaluatorTraining,
    SavedEvalVideos,
    ToyEvaluatorConfig,
    ToyVideoClassifier,
    accuracy_by_attribute,
    confusion_counts,
    eval_scenes,
    evaluate_pipeline,
    evaluate_videos,
    format_confusion,
    format_eval_table,
    load_eval_videos,
    load_toy_evaluator,
    save_eval_videos,
    save_toy_evaluator,
    train_toy_evaluator,
)
from hummingbird_t2v.toyworld.labels import ATTRIBUTE_CLASSES
from hummingbird_t2v.toyworld.scene import VOCABULARY_PRESETS

FRESH_WORLD_SEED = 3  # neither the training (0), held-out (1) nor evaluation (2) world


# ------------------------------------------------------------------------------ flickering
def test_a_static_video_scores_one_and_a_known_change_scores_its_mean_difference():
    static = np.full((5, 8, 8, 3), 77, dtype=np.uint8)
    assert temporal_flickering(static) == 1.0
    alternating = static.copy()
    alternating[1::2] += 51  # every consecutive pair differs by 51 everywhere
    assert temporal_flickering(alternating) == pytest.approx((255 - 51) / 255)
    half = static.copy()
    half[1:, :4] = 77 + 30  # one step changes half the pixels by 30, later steps change nothing
    expected_mean = (15.0 + 0 + 0 + 0) / 4
    assert temporal_flickering(half) == pytest.approx((255 - expected_mean) / 255)


def test_float_frames_are_read_as_8_bit_and_the_dimension_is_the_mean_over_videos():
    ramp = np.linspace(0, 1, 4)[:, None, None, None] * np.ones((4, 2, 2, 3))
    as_uint8 = (ramp * 255 + 0.5).astype(np.uint8)
    assert temporal_flickering(ramp) == pytest.approx(temporal_flickering(as_uint8))
    static = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    assert mean_temporal_flickering([static, as_uint8]) == pytest.approx((1 + temporal_flickering(as_uint8)) / 2)


@pytest.mark.parametrize("frames", [np.zeros((1, 4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4, 4, 3), np.int32)])
def test_flickering_refuses_unusable_frames(frames):
    with pytest.raises(ConfigError):
        temporal_flickering(frames)
    with pytest.raises(ConfigError, match="at least one video"):
        mean_temporal_flickering([])


# --------------------------------------------------------------------------- the classifier
def test_any_clip_length_size_and_dtype_is_prepared_to_the_network_input():
    model = ToyVideoClassifier()
    c = model.config
    for frames in (np.zeros((2, 16, 64, 64, 3), np.uint8), np.ones((1, 5, 48, 80, 3), np.float32), torch.rand(3, 30, 128, 128, 3)):
        video = model.prepare(frames)
        assert video.shape == (len(frames), 3, c.num_frames, c.height, c.width)
        assert -1.0 <= float(video.min()) and float(video.max()) <= 1.0
    # Frames are spread over the whole clip: the last input frame is the clip's last frame.
    clip = np.zeros((1, 16, 64, 64, 3), np.uint8)
    clip[0, -1] = 255
    assert float(model.prepare(clip)[0, :, -1].min()) == 1.0
    with pytest.raises(ConfigError, match="layout"):
        model.prepare(np.zeros((16, 64, 64, 3), np.uint8))


def test_predictions_name_toy_values_and_accuracy_compares_them():
    model = ToyVideoClassifier(ToyEvaluatorConfig(stage_channels=(8, 8, 8), stem_channels=8, appearance_channels=(8, 8)))
    predictions = model.predict(np.random.default_rng(0).integers(0, 255, (3, 16, 64, 64, 3), dtype=np.uint8))
    assert len(predictions) == 3
    for row in predictions:
        assert set(row) == set(model.config.attributes)
        assert all(row[name] in ATTRIBUTE_CLASSES[name] for name in row)
    truth = [dict(row) for row in predictions]
    truth[0]["shape"] = next(s for s in ATTRIBUTE_CLASSES["shape"] if s != predictions[0]["shape"])
    accuracy = accuracy_by_attribute(predictions, truth)
    assert accuracy["shape"] == pytest.approx(2 / 3) and accuracy["color"] == 1.0
    with pytest.raises(ConfigError, match="one ground-truth"):
        accuracy_by_attribute(predictions, truth[:2])


def test_config_round_trip_and_bad_configs_are_named():
    config = ToyEvaluatorConfig(attributes=("shape", "color"))
    assert ToyEvaluatorConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown evaluator attributes"):
        ToyEvaluatorConfig(attributes=("smell",))
    with pytest.raises(ConfigError, match="divide"):
        ToyEvaluatorConfig(height=60)
    with pytest.raises(ConfigError, match="unknown ToyEvaluatorConfig fields"):
        ToyEvaluatorConfig.from_dict({"layers": 3})


def test_appearance_is_read_per_frame_and_motion_across_frames():
    torch.manual_seed(0)
    model = ToyVideoClassifier(ToyEvaluatorConfig(stage_channels=(8, 8, 8), stem_channels=8, appearance_channels=(8, 8))).eval()
    assert model.heads["shape"].in_features == model.config.appearance_features
    assert model.heads["motion"].in_features == model.config.pooled_features
    video = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    reversed_in_time = video.flip(2)
    with torch.no_grad():
        forward, backward = model(video), model(reversed_in_time)
    # Shape, colour and size come from a per-frame trunk averaged over frames: frame order cannot
    # matter. Motion comes from the (2+1)D trunk, which sees the order.
    for name in ("shape", "color", "size"):
        torch.testing.assert_close(forward[name], backward[name])
    assert not torch.allclose(forward["motion"], backward["motion"])


def test_an_evaluator_saved_before_the_appearance_trunk_still_loads():
    old = ToyEvaluatorConfig(appearance_channels=()).to_dict()
    del old["appearance_channels"], old["appearance_attributes"]
    config = ToyEvaluatorConfig.from_dict(old)
    assert config.appearance_channels == () and not config.reads_appearance("shape")
    model = ToyVideoClassifier(config)
    assert model.appearance is None and model.heads["shape"].in_features == config.pooled_features
    with pytest.raises(ConfigError, match="unknown evaluator attributes"):
        ToyEvaluatorConfig(appearance_attributes=("texture",))


def test_training_clips_mix_in_the_core_vocabulary_at_the_asked_share():
    from hummingbird_t2v.toyworld.evaluator import _TrainingClips

    names = ("background", "camera")
    for share, expect_core in ((1.0, True), (0.0, False)):
        _, labels = next(iter(_TrainingClips(EvaluatorTraining(batch_size=24, core_fraction=share), names)))
        solid_and_still = (labels["background"] == ATTRIBUTE_CLASSES["background"].index("solid")) & (
            labels["camera"] == ATTRIBUTE_CLASSES["camera"].index("still"))
        assert bool(solid_and_still.all()) is expect_core
    with pytest.raises(ConfigError, match="core_fraction"):
        train_toy_evaluator(EvaluatorTraining(steps=1, core_fraction=1.5), log=None)


def test_training_runs_and_the_saved_evaluator_reloads_identically(tmp_path, monkeypatch):
    import hummingbird_t2v.toyworld.evaluator as evaluator_module

    # Two steps of a tiny network, scored on a handful of held-out clips.
    monkeypatch.setattr(evaluator_module, "held_out_accuracy",
                        lambda model: {"clean": evaluator_module.evaluate_real_clips(4, world_seed=1, evaluator=model).accuracy})
    tiny = ToyEvaluatorConfig(stem_channels=8, stage_channels=(8, 8, 8), appearance_channels=(8, 8))
    model, record = train_toy_evaluator(EvaluatorTraining(steps=2, batch_size=4, threads=1), tiny, log=None)
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert set(record["held_out_accuracy"]["clean"]) == set(tiny.attributes)
    save_toy_evaluator(model, tmp_path / "evaluator", record)
    reloaded = load_toy_evaluator(tmp_path / "evaluator")
    clip = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED)).clip(0).frames[None]
    with torch.no_grad():
        for name, logits in model(model.prepare(clip)).items():
            torch.testing.assert_close(reloaded(reloaded.prepare(clip))[name], logits)
    with pytest.raises(CheckpointError):
        load_toy_evaluator(tmp_path / "missing")
    # A time budget far too short for 100 steps ends training right after the warm-up.
    _, record = train_toy_evaluator(EvaluatorTraining(steps=100, warmup_steps=2, max_minutes=1e-6, batch_size=2, threads=1), tiny, log=None)
    assert record["steps_trained"] == 3
    with pytest.raises(ConfigError, match="max_minutes"):
        EvaluatorTraining(max_minutes=0)


# ------------------------------------------------------------------------ the shipped weights
@pytest.fixture(scope="module")
def shipped() -> ToyVideoClassifier:
    return load_toy_evaluator()


def test_the_shipped_evaluator_is_small_and_reads_fresh_real_clips(shipped):
    assert sum(p.numel() for p in shipped.parameters()) < 1_000_000
    assert (TOY_EVALUATOR_DIR / "model.safetensors").stat().st_size < 4_000_000
    world = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED))
    clips = [world.clip(i) for i in range(64)]
    accuracy = evaluate_videos(np.stack([c.frames for c in clips]), [c.attributes for c in clips], shipped)
    # Held out, on 500 clips: background 100 %, colour 96 %, camera 95 %, motion 82 %, size 77 %,
    # shape 73 % (chance 12.5 %). These floors leave room for 64 clips' noise.
    assert accuracy["color"] >= 0.9 and accuracy["background"] >= 0.9 and accuracy["camera"] >= 0.8
    assert accuracy["motion"] >= 0.65 and accuracy["size"] >= 0.6
    assert accuracy["shape"] >= 0.55


def test_the_shipped_evaluator_reads_every_attribute_of_core_clips(shipped):
    """The built-in model is scored on core prompts: there the evaluator must read real clips
    (nearly) perfectly, or its accuracies say nothing about the model."""
    world = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED, vocabulary=VOCABULARY_PRESETS["core"]))
    clips = [world.clip(i) for i in range(48)]
    accuracy = evaluate_videos(np.stack([c.frames for c in clips]), [c.attributes for c in clips], shipped)
    assert min(accuracy.values()) >= 0.95, accuracy


def test_shuffled_ground_truth_scores_far_lower(shipped):
    """Accuracy measures prompt following: the same videos judged against other prompts fail."""
    world = ToyWorld(ToyWorldConfig(seed=FRESH_WORLD_SEED))
    clips = [world.clip(i) for i in range(32, 56)]
    videos = np.stack([c.frames for c in clips])
    truth = [c.attributes for c in clips]
    shuffled = truth[1:] + truth[:1]
    right, wrong = evaluate_videos(videos, truth, shipped), evaluate_videos(videos, shuffled, shipped)
    assert wrong["color"] < right["color"] - 0.5


# ------------------------------------------------------------------------------- toyworld eval
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_eval_real_prints_the_table_and_writes_json(tmp_path, capsys):
    args = _parse(["eval", "--real", "--n", "6", "--json", str(tmp_path / "r.json")])
    assert args.world_seed == EVAL_WORLD_SEED
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "real clips (n=6)" in out and "temporal flickering" in out and "chance" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"][0]["count"] == 6 and set(saved["results"][0]["accuracy"]) == set(EVALUATOR_ATTRIBUTES)


def test_eval_needs_a_model_or_real():
    args = _parse(["eval", "--n", "2"])
    with pytest.raises(ConfigError, match="--model"):
        args.func(args)
    for argv, message in (
        (["eval", "--videos", "v.npz", "--real"], "drop --model"),
        (["eval", "--real", "--save-videos", "v.npz"], "--save-videos FILE.npz"),
        (["eval", "--videos", "missing.npz"], "no saved evaluation videos"),
        (["eval", "--videos", "v.npz", "--prior-strength", "0"], "--prior-strength set how --model samples"),
        (["eval", "--videos", "v.npz", "--gamma", "0"], "--gamma set how --model samples"),
        (["eval", "--model", str(builtin_model_folder()), "--n", "2", "--gamma", "0.5"], "samples with DDIM: drop --gamma"),
        (["eval", "--videos", "v.npz", "--steps", "4", "--guidance-scale", "2"], "--steps, --guidance-scale set how"),
    ):
        args = _parse(argv)
        with pytest.raises(ConfigError, match=message):
            args.func(args)


def test_confusion_counts_asked_against_read():
    predictions = [{"motion": "left"}, {"motion": "right"}, {"motion": "left"}, {"motion": "still"}]
    attributes = [{"motion": "left"}, {"motion": "left"}, {"motion": "right"}, {"motion": "still"}]
    counts = confusion_counts(predictions, attributes, "motion")
    assert counts == {"left": {"left": 1, "right": 1}, "right": {"left": 1}, "still": {"still": 1}}
    lines = format_confusion(counts, "motion").splitlines()
    assert lines[0].split()[-4:] == ["still", "left", "right", "correct"]  # read values in class order
    assert lines[1].split() == ["still", "1", "0", "0", "1/1"]
    assert lines[2].split() == ["left", "0", "1", "1", "1/2"]
    with pytest.raises(ConfigError, match="reads no attribute 'shape2'"):
        confusion_counts(predictions, attributes, "shape2")


def test_a_damaged_saved_videos_file_is_refused(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    np.savez(tmp_path / "other.npz", frames=np.zeros(3))
    for name in ("bad.npz", "other.npz"):
        with pytest.raises(ConfigError, match="not a file of saved evaluation videos"):
            load_eval_videos(tmp_path / name)
    with pytest.raises(ConfigError, match="uint8"):
        save_eval_videos(tmp_path / "v.npz", SavedEvalVideos("x", np.zeros((2, 4, 8, 8, 3)), ["a", "b"], [{}, {}], 2, VOCABULARY_PRESETS["core"]))
    assert not (tmp_path / "v.npz").exists()


class _PromptEchoPipeline:
    """Stands in for HummingbirdPipeline: renders the real clip of each prompt's scene (as floats in
    [0, 1], the pipeline's np output), so a perfect model's score must equal the real clips' score."""

    def __init__(self, captions: list[str]) -> None:
        self.world = ToyWorld(ToyWorldConfig(seed=EVAL_WORLD_SEED))
        self.index = {caption: i for i, caption in enumerate(captions)}
        self.calls = []

    def __call__(self, prompts, **kwargs):
        self.calls.append((list(prompts), kwargs))
        frames = np.stack([self.world.clip(self.index[p]).frames for p in prompts]).astype(np.float32) / 255
        return argparse.Namespace(frames=frames)


def test_a_perfect_model_matches_the_real_clip_accuracy(shipped):
    _, prompts, attributes = eval_scenes(10)
    assert prompts[0] and all(isinstance(a, dict) for a in attributes)
    pipe = _PromptEchoPipeline(prompts)
    from hummingbird_t2v.toyworld.evaluator import evaluate_real_clips

    generated = evaluate_pipeline(pipe, 10, num_inference_steps=3, batch_size=4, evaluator=shipped)
    real = evaluate_real_clips(10, evaluator=shipped)
    assert [len(p) for p, _ in pipe.calls] == [4, 4, 2]
    assert pipe.calls[0][1]["num_inference_steps"] == 3
    assert generated.accuracy == real.accuracy
    assert generated.temporal_flickering == pytest.approx(real.temporal_flickering)
    table = format_eval_table([real, generated])
    assert table.splitlines()[0].split()[:2] == ["attribute", "chance"]
    with pytest.raises(ConfigError):
        eval_scenes(0)


def test_eval_generates_from_a_model_folder_end_to_end(tmp_path, capsys):
    """A tiny random student saved as a model folder (word text encoder included) goes through
    HummingbirdPipeline.from_pretrained, generation and scoring."""
    from hummingbird_t2v.models.unet import UNet3D
    from hummingbird_t2v.models.unet_config import get_unet_preset
    from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
    from hummingbird_t2v.models.word_text_encoder import (
        WordTextEncoder,
        WordTextEncoderConfig,
    )
    from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline

    torch.manual_seed(0)
    text_encoder = WordTextEncoder(WordTextEncoderConfig(vocabulary=("a", "red", "circle"), width=32, layers=1, heads=2))
    unet = UNet3D(get_unet_preset("tiny-hb-0.7b").replace(channel_mult=(1, 2)))
    vae = VideoVAE(VAEConfig(base_channels=8, channel_multipliers=(1, 2), norm_num_groups=8, sample_size=32))
    defaults = SamplingDefaults(num_inference_steps=2, guidance_scale=7.5, fps=8, num_frames=4, height=32, width=32)
    config = PipelineConfig(sampler="consistency", defaults=defaults, extra={"toy_vocabulary": "core"})
    HummingbirdPipeline(unet, vae, text_encoder, config).save_pretrained(tmp_path / "tiny")
    saved_file = tmp_path / "videos.npz"
    args = _parse(["eval", "--model", str(tmp_path / "tiny"), "--n", "3", "--steps", "1", "--batch-size", "2",
                   "--save-videos", str(saved_file), "--json", str(tmp_path / "generated.json")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "real clips (n=3)" in out and "tiny (n=3)" in out
    assert "the model's vocabulary" in out  # prompts from the core vocabulary the folder records
    # The saved videos are scored again without the model, to the same numbers.
    saved = load_eval_videos(saved_file)
    assert saved.videos.shape == (3, 4, 32, 32, 3) and saved.videos.dtype == np.uint8
    assert saved.vocabulary == VOCABULARY_PRESETS["core"] and saved.prompts == eval_scenes(3, vocabulary="core")[1]
    rescore = _parse(["eval", "--videos", str(saved_file), "--json", str(tmp_path / "rescored.json"), "--confusion", "motion"])
    assert rescore.func(rescore) == 0
    out = capsys.readouterr().out
    assert "tiny (n=3)" in out and "motion: asked \\ read" in out
    confusion = json.loads((tmp_path / "rescored.json").read_text())["confusion"]["motion"]
    asked = [a["motion"] for a in saved.attributes]
    assert {value: sum(row.values()) for value, row in confusion.items()} == {v: asked.count(v) for v in set(asked)}
    first, again = (json.loads((tmp_path / name).read_text())["results"] for name in ("generated.json", "rescored.json"))
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in first]
    assert again[1]["temporal_flickering"] == pytest.approx(first[1]["temporal_flickering"])
    assert model_toy_vocabulary(tmp_path / "tiny") == VOCABULARY_PRESETS["core"]
    assert model_toy_vocabulary(tmp_path) is None


def test_an_adopted_motion_trunk_is_copied_frozen_and_only_the_appearance_trunk_trains(tmp_path, monkeypatch):
    import hummingbird_t2v.toyworld.evaluator as evaluator_module

    monkeypatch.setattr(evaluator_module, "held_out_accuracy", lambda model: {})
    tiny = ToyEvaluatorConfig(stem_channels=8, stage_channels=(8, 8, 8), appearance_channels=(8, 8))
    torch.manual_seed(1)
    source = ToyVideoClassifier(tiny)
    save_toy_evaluator(source, tmp_path / "source", {"note": "the source"})
    model, record = train_toy_evaluator(
        EvaluatorTraining(steps=2, batch_size=4, threads=1, motion_trunk_from=str(tmp_path / "source")), tiny, log=None)
    reference = source.state_dict()
    for key, value in model.state_dict().items():
        adopted = key.startswith("features.") or key.split(".")[1:2] in (["motion"], ["camera"], ["background"])
        if adopted:  # weights and batch-norm statistics unchanged
            torch.testing.assert_close(value, reference[key], msg=key)
    assert not torch.equal(model.appearance[0][0].weight, source.appearance[0][0].weight)
    assert record["motion_trunk_adopted_from"]["note"] == "the source"
    with pytest.raises(ConfigError, match="another layout"):
        evaluator_module.adopt_motion_trunk(ToyVideoClassifier(ToyEvaluatorConfig(stem_channels=16, appearance_channels=(8, 8))), source)
    single_trunk = ToyEvaluatorConfig(stem_channels=8, stage_channels=(8, 8, 8), appearance_channels=())
    save_toy_evaluator(ToyVideoClassifier(single_trunk), tmp_path / "single", {})
    with pytest.raises(ConfigError, match="nothing to train"):
        train_toy_evaluator(EvaluatorTraining(steps=1, batch_size=2, threads=1, motion_trunk_from=str(tmp_path / "single")),
                            single_trunk, log=None)
