"""Toy-world reward: prompt parser against the toy world's own captions, reward against a fake evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.rewards import (
    RewardInputError,
    ToyAttributeReward,
    ToyMotionReward,
    ToyPromptParser,
    build_reward_model,
)
from hummingbird_t2v.toyworld.captions import canonical_caption, paraphrase_caption
from hummingbird_t2v.toyworld.scene import SceneSpec, SceneVocabulary, sample_scene
from hummingbird_t2v.toyworld.vocabulary import COLORS, MOTIONS, SHAPES


def _ground_truth(scene: SceneSpec) -> dict[str, str]:
    truth = {"num_objects": str(len(scene.objects))}
    for position, obj in enumerate(scene.objects):
        suffix = "" if position == 0 else str(position + 1)
        truth.update({f"shape{suffix}": obj.shape, f"color{suffix}": obj.color,
                      f"size{suffix}": obj.size, f"motion{suffix}": obj.motion})
    truth["background"] = scene.background.kind
    truth["background_color"] = scene.background.color
    if scene.background.color2:
        truth["background_color2"] = scene.background.color2
    truth["camera"] = scene.camera.kind
    return truth


def test_parser_recovers_every_attribute_of_canonical_and_paraphrased_captions():
    parser = ToyPromptParser()
    rng = np.random.default_rng(11)
    vocabulary = SceneVocabulary()
    mismatches = []
    for _ in range(600):
        scene = sample_scene(rng, vocabulary)
        for caption in (canonical_caption(scene), paraphrase_caption(scene, rng), paraphrase_caption(scene, rng)):
            if parser(caption) != _ground_truth(scene):
                mismatches.append(caption)
    assert not mismatches, mismatches[:5]


def test_parser_on_hand_written_prompts():
    parser = ToyPromptParser()
    assert parser("A crimson disc drifting left against a cobalt backdrop, slow zoom in") == {
        "num_objects": "1", "shape": "circle", "color": "red", "size": "medium", "motion": "left",
        "background": "solid", "background_color": "blue", "camera": "zoom_in",
    }
    assert parser("an astronaut riding a horse") == {"camera": "still"}  # nothing of the toy world but the camera default


class FakeEvaluator(nn.Module):
    """A stand-in with the evaluator contract: mean colour of the clip -> linear heads."""

    def __init__(self, num_frames: int | None = None, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attribute_values = {"color": list(COLORS), "shape": list(SHAPES), "motion": list(MOTIONS)}
        self.heads = nn.ModuleDict({name: nn.Linear(6, len(values)) for name, values in self.attribute_values.items()})
        if num_frames is not None:
            self.num_frames = num_frames
        if image_size is not None:
            self.image_size = image_size
        self.seen_shapes: list[tuple[int, ...]] = []

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen_shapes.append(tuple(frames.shape))
        features = torch.cat([frames.mean(dim=(1, 3, 4)), frames.std(dim=(1, 3, 4))], dim=1)
        return {name: head(features) for name, head in self.heads.items()}


PROMPTS = ["a red circle moving left on a blue background", "a small green star spinning on a white background"]


def test_toy_reward_is_the_log_probability_of_the_prompted_values():
    evaluator = FakeEvaluator()
    frames = torch.rand(2, 8, 3, 16, 16, requires_grad=True)
    with torch.no_grad():
        logits = evaluator(frames)
    log_probs = {name: F.log_softmax(value, dim=-1) for name, value in logits.items()}
    color_only = ToyAttributeReward(evaluator, ["color"])
    expected = torch.stack([log_probs["color"][0, COLORS.index("red")], log_probs["color"][1, COLORS.index("green")]])
    torch.testing.assert_close(color_only.score(frames, PROMPTS), expected)

    every = ToyAttributeReward(evaluator)
    first = (log_probs["color"][0, COLORS.index("red")] + log_probs["shape"][0, SHAPES.index("circle")]
             + log_probs["motion"][0, MOTIONS.index("left")]) / 3
    torch.testing.assert_close(every.score(frames, PROMPTS)[0], first)
    probability = ToyAttributeReward(evaluator, ["color"], mode="prob").score(frames, PROMPTS)
    torch.testing.assert_close(probability, expected.exp())

    score = color_only.score(frames, PROMPTS)
    score.sum().backward()
    assert score.shape == (2,) and frames.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in evaluator.parameters()) and not evaluator.training
    assert color_only.kind == "video_text" and color_only.num_frames == 8


def test_gradient_ascent_on_the_color_reward_raises_the_targeted_probability():
    """What reward feedback does, in miniature: following the reward's gradient makes the
    evaluator more confident in the prompted colour."""
    reward = ToyAttributeReward(FakeEvaluator(), ["color"], mode="prob")
    frames = torch.rand(1, 8, 3, 16, 16, requires_grad=True)
    before = reward.score(frames, PROMPTS[:1]).item()
    for _ in range(20):
        (grad,) = torch.autograd.grad(reward.score(frames, PROMPTS[:1]).sum(), frames)
        frames = (frames + 0.02 * grad.sign()).clamp(0, 1).detach().requires_grad_(True)
    assert reward.score(frames, PROMPTS[:1]).item() > 1.2 * before


def test_prompts_without_the_targeted_attributes_score_zero():
    reward = ToyAttributeReward(FakeEvaluator(), ["shape", "color"])
    targets = reward.targets(["a blue background", PROMPTS[0]])
    assert targets["shape"].tolist() == [-1, SHAPES.index("circle")]
    scores = reward.score(torch.rand(2, 8, 3, 8, 8), ["a blue background", PROMPTS[0]])
    assert scores[0] == 0 and scores[1] < 0


def test_classifier_frame_count_and_size_are_honoured():
    evaluator = FakeEvaluator(num_frames=6, image_size=(12, 20))
    reward = build_reward_model("toy", classifier=evaluator, attributes=["motion"])
    assert reward.num_frames == 6
    reward.score(torch.rand(2, 6, 3, 24, 40), PROMPTS)
    assert evaluator.seen_shapes[-1] == (2, 6, 3, 12, 20)
    with pytest.raises(RewardInputError, match="6 frames"):
        reward.score(torch.rand(2, 8, 3, 12, 20), PROMPTS)


def test_toy_reward_configuration_errors():
    with pytest.raises(ConfigError, match="does not predict"):
        ToyAttributeReward(FakeEvaluator(), ["camera"])
    with pytest.raises(ConfigError, match="attribute_values"):
        ToyAttributeReward(nn.Linear(3, 3))
    with pytest.raises(ConfigError, match="expects 6 frames"):
        ToyAttributeReward(FakeEvaluator(num_frames=6), num_frames=8)
    with pytest.raises(ConfigError, match="either classifier"):
        build_reward_model("toy", "weights.safetensors", classifier=FakeEvaluator())


def test_the_toy_reward_loads_the_shipped_evaluator_and_keeps_it_frozen_in_eval_mode():
    """`build_reward_model("toy")` with no weights: the evaluator that ships with the package, in the
    frames-in-[0, 1] form the reward calls; training mode must not switch its batch norm to batch statistics."""
    reward = build_reward_model("toy", attributes=["color", "motion"])
    reward.train()
    classifier = reward.classifier.classifier
    assert not classifier.training and not any(p.requires_grad for p in classifier.parameters())
    running_mean = classifier.features[0][1].running_mean.clone()
    frames = torch.rand(2, 8, 3, 64, 64, requires_grad=True)
    scores = reward.score(frames, ["a red circle moving left on a blue background", "a green square moving up on a white background"])
    assert scores.shape == (2,) and torch.isfinite(scores).all() and (scores <= 0).all()  # log-probabilities
    scores.sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0
    torch.testing.assert_close(classifier.features[0][1].running_mean, running_mean)


# ----------------------------------------------------------------------------- the motion reward


def _square_video(dx: int, dy: int, frames: int = 8, size: int = 32) -> torch.Tensor:
    """(1, T, 3, size, size): a white 6x6 square on black moving (dx, dy) pixels per frame."""
    video = torch.zeros(1, frames, 3, size, size)
    for f in range(frames):
        x, y = 4 + dx * f, 12 + dy * f
        video[0, f, :, y : y + 6, x : x + 6] = 1.0
    return video


def test_motion_reward_reads_the_squares_travel_along_and_across_the_asked_direction():
    reward = build_reward_model("toy_motion")
    assert isinstance(reward, ToyMotionReward) and reward.kind == "video_text" and reward.num_frames == 8
    video = _square_video(2, 0)  # 14 pixels in 8 frames; the short side (32 px) spans 2 units
    prompts = [f"a white square moving {d} on a black background" for d in ("right", "left", "up", "down")]
    prompts.append("a white square standing still on a black background")
    scores = reward.score(video.expand(5, -1, -1, -1, -1), prompts)
    torch.testing.assert_close(scores, torch.tensor([0.875, -0.875, -0.875, -0.875, 0.0]))
    capped = ToyMotionReward(max_travel=0.5).score(video, prompts[:1])
    torch.testing.assert_close(capped, torch.tensor([0.5]))
    diagonal = reward.score(_square_video(2, 1), prompts[:1])  # 0.875 along, 0.4375 across
    torch.testing.assert_close(diagonal, torch.tensor([0.875 - 0.4375]))


def test_motion_reward_gives_gradient_only_for_straight_line_prompts():
    reward = build_reward_model("toy_motion")
    video = _square_video(1, 0).expand(2, -1, -1, -1, -1).clone().requires_grad_(True)
    prompts = ["a white square moving right on a black background", "a white square rotating on a black background"]
    reward.score(video, prompts).sum().backward()
    assert video.grad[0].abs().sum() > 0 and video.grad[1].abs().sum() == 0
    directions = reward.directions(["a red circle moving left and a blue square moving up on a white background"])
    assert torch.equal(directions, torch.zeros(1, 2))  # two objects: one centroid cannot tell their paths apart


def test_motion_reward_follows_real_toy_clips_and_not_their_opposites():
    from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
    from hummingbird_t2v.toyworld.scene import VOCABULARY_PRESETS

    world = ToyWorld(ToyWorldConfig(num_frames=8, seed=2, vocabulary=VOCABULARY_PRESETS["core"], paraphrase=False))
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    reward = ToyMotionReward()
    checked = 0
    for clip in world.clips(40):
        motion = clip.scene.objects[0].motion
        if motion not in opposite:
            continue
        frames = torch.from_numpy(clip.frames).float().div(255).permute(0, 3, 1, 2)[None]
        flipped = clip.caption.replace(f"moving {motion}", f"moving {opposite[motion]}")
        true_score, flipped_score = reward.score(frames.expand(2, -1, -1, -1, -1), [clip.caption, flipped])
        assert true_score > 0.05 and flipped_score < -0.05, clip.caption
        checked += 1
    assert checked >= 20


def test_motion_reward_refuses_bad_settings_and_weights():
    with pytest.raises(ConfigError, match="max_travel"):
        ToyMotionReward(max_travel=0.0)
    with pytest.raises(ConfigError, match="at least 2 frames"):
        ToyMotionReward(num_frames=1)
    with pytest.raises(ConfigError, match="no weights"):
        build_reward_model("toy_motion", "some/file.pt")
    with pytest.raises(RewardInputError, match="prompts"):
        ToyMotionReward().score(_square_video(1, 0), ["a", "b"])
    with pytest.raises(RewardInputError, match="at least 2 frames"):
        ToyMotionReward().score(_square_video(1, 0, frames=1), ["a white square moving right"])
