"""The toy world: determinism, ground truth visible in the pixels, captions, degradations, files."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hummingbird_t2v.data import FrameSampling, VideoClipDataset, frames_to_tensor
from hummingbird_t2v.errors import ConfigError, HummingbirdError
from hummingbird_t2v.toyworld import (
    ATTRIBUTE_COLUMNS,
    Degradation,
    SceneVocabulary,
    ToyWorld,
    ToyWorldConfig,
    ToyWorldDataset,
    ToyWorldError,
    apply_degradation,
    make_dataset,
)
from hummingbird_t2v.toyworld.captions import canonical_caption, paraphrase_caption
from hummingbird_t2v.toyworld.cli import add_parser
from hummingbird_t2v.toyworld.render import render_scene
from hummingbird_t2v.toyworld.scene import (
    VOCABULARY_PRESETS,
    BackgroundSpec,
    CameraSpec,
    ObjectSpec,
    SceneSpec,
    describe_vocabulary,
    resolve_vocabulary,
)
from hummingbird_t2v.toyworld.vocabulary import (
    CAMERA_WORDS,
    COLOR_RGB,
    COLOR_WORDS,
    MOTION_DIRECTIONS,
    ROTATION_INVARIANT_SHAPES,
    SHAPE_WORDS,
)

# One object, still camera: every change on screen is the object's own motion.
SIMPLE = SceneVocabulary(two_object_fraction=0.0, camera_motion_fraction=0.0)


def _object_mask(frames: np.ndarray, color: str) -> np.ndarray:
    """Pixels showing exactly the object's colour (backgrounds are chosen to differ strongly)."""
    return np.abs(frames.astype(int) - np.asarray(COLOR_RGB[color])).max(axis=-1) <= 2


def _centroid(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def _scene(
    motion: str = "still",
    camera: CameraSpec | None = None,
    background: BackgroundSpec | None = None,
    shape: str = "circle",
    color: str = "red",
    size: str = "medium",
    **params: float,
) -> SceneSpec:
    obj = ObjectSpec(shape=shape, color=color, size=size, motion=motion, radius=0.26, center=(0.0, 0.0), **params)
    return SceneSpec((obj,), background or BackgroundSpec("solid", "blue"), camera or CameraSpec("still"))


def test_clips_are_determined_by_seed_and_index() -> None:
    world = ToyWorld(ToyWorldConfig(seed=4))
    forward = [world.clip(i) for i in range(4)]
    backward = [ToyWorld(ToyWorldConfig(seed=4)).clip(i) for i in reversed(range(4))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert np.array_equal(a.frames, b.frames) and a.caption == b.caption and a.attributes == b.attributes
    other = ToyWorld(ToyWorldConfig(seed=5)).clip(0)
    assert not np.array_equal(other.frames, forward[0].frames)


def test_frame_format_follows_the_config() -> None:
    clip = ToyWorld(ToyWorldConfig(height=32, width=48, num_frames=10, fps=6)).clip(3)
    assert clip.frames.shape == (10, 32, 48, 3) and clip.frames.dtype == np.uint8 and clip.fps == 6


def test_straight_motions_move_the_object_that_way() -> None:
    world = ToyWorld(
        ToyWorldConfig(
            vocabulary=SceneVocabulary(
                two_object_fraction=0.0, camera_motion_fraction=0.0, motions=tuple(MOTION_DIRECTIONS)
            )
        )
    )
    for index in range(40):
        clip = world.clip(index)
        obj = clip.scene.objects[0]
        mask = _object_mask(clip.frames, obj.color)
        shift = _centroid(mask[-1]) - _centroid(mask[0])
        direction_x, direction_y = MOTION_DIRECTIONS[obj.motion]
        along = shift @ np.array([direction_x, direction_y])
        across = abs(shift @ np.array([-direction_y, direction_x]))
        assert along > 0.15 * 64, (index, obj.motion, shift)  # visibly, at least 15 % of the frame
        assert across < 1.5, (index, obj.motion, shift)


def test_scaling_rotating_bouncing_and_still_objects() -> None:
    grow = render_scene(_scene("growing", growth=2.0), 64, 64, 16)
    shrink = render_scene(_scene("shrinking", growth=0.5), 64, 64, 16)
    grow_area = _object_mask(grow, "red").sum(axis=(1, 2))
    shrink_area = _object_mask(shrink, "red").sum(axis=(1, 2))
    assert np.all(np.diff(grow_area) >= 0) and grow_area[-1] > 3 * grow_area[0]
    assert np.all(np.diff(shrink_area) <= 0) and shrink_area[0] > 3 * shrink_area[-1]

    spin = render_scene(_scene("rotating", shape="square", spin=np.pi / 4), 64, 64, 9)
    masks = _object_mask(spin, "red")
    assert np.allclose(_centroid(masks[0]), _centroid(masks[-1]), atol=0.5)
    assert (masks[0] != masks[4]).sum() > 30  # turned by 22.5 degrees: the outline changed

    bounce = _object_mask(render_scene(_scene("bouncing", travel=0.5), 64, 64, 17), "red")
    heights = np.array([_centroid(m)[1] for m in bounce])
    assert heights[0] == pytest.approx(heights[8], abs=0.5) == pytest.approx(heights[16], abs=0.5)
    assert heights[4] < heights[0] - 5 and heights[12] < heights[0] - 5  # two hops (y points down)

    still = render_scene(_scene("still", background=BackgroundSpec("dots", "blue")), 64, 64, 8)
    assert np.array_equal(still[0], still[-1])


def test_camera_moves() -> None:
    textured = BackgroundSpec("checkerboard", "blue", cell=0.3)
    pan = render_scene(_scene(camera=CameraSpec("pan_left", travel=0.5), background=textured), 64, 64, 8)
    pan_shift = _centroid(_object_mask(pan[-1], "red")) - _centroid(_object_mask(pan[0], "red"))
    assert pan_shift[0] == pytest.approx(0.5 * 32, abs=1.0) and abs(pan_shift[1]) < 0.5  # content moves right

    zoom = render_scene(_scene(camera=CameraSpec("zoom_in", zoom=1.6), background=textured), 64, 64, 8)
    zoom_area = _object_mask(zoom, "red").sum(axis=(1, 2))
    assert zoom_area[-1] / zoom_area[0] == pytest.approx(1.6**2, rel=0.15)

    dolly = render_scene(_scene(camera=CameraSpec("dolly_zoom", zoom=1.6), background=textured), 64, 64, 8)
    dolly_mask = _object_mask(dolly, "red")
    assert np.ptp(dolly_mask.sum(axis=(1, 2))) <= 2  # the subject keeps its size ...
    background_change = np.abs(dolly[-1].astype(int) - dolly[0].astype(int))[~(dolly_mask[0] | dolly_mask[-1])]
    assert background_change.mean() > 10  # ... while the background is rescaled behind it


def test_sampled_scenes_respect_the_rules() -> None:
    world = ToyWorld(ToyWorldConfig(vocabulary=SceneVocabulary(two_object_fraction=0.5, camera_motion_fraction=0.5)))
    for index in range(300):
        scene = world.scene(index)
        if scene.camera.kind != "still":
            assert scene.background.kind in {"checkerboard", "stripes", "dots"}
        colors = [obj.color for obj in scene.objects]
        assert len(set(colors)) == len(colors)
        assert scene.background.color not in colors
        for obj in scene.objects:
            assert not (obj.motion == "rotating" and obj.shape in ROTATION_INVARIANT_SHAPES)
            if obj.motion in MOTION_DIRECTIONS or obj.motion == "bouncing":
                assert obj.travel >= 0.4


def test_restricted_vocabulary() -> None:
    vocab = SceneVocabulary(shapes=("star", "square"), colors=("red", "white", "blue"), motions=("left", "rotating"))
    world = ToyWorld(ToyWorldConfig(vocabulary=vocab))
    for index in range(50):
        for obj in world.scene(index).objects:
            assert obj.shape in vocab.shapes and obj.color in vocab.colors and obj.motion in vocab.motions
    with pytest.raises(ConfigError, match="unknown toy-world shapes"):
        SceneVocabulary(shapes=("blob",))
    with pytest.raises(ConfigError, match="rotating is invisible"):
        SceneVocabulary(shapes=("circle",), motions=("rotating",))
    with pytest.raises(ConfigError):
        ToyWorldConfig(height=4)


def test_vocabulary_presets_resolve_and_describe_themselves() -> None:
    core = resolve_vocabulary("core")
    assert core is VOCABULARY_PRESETS["core"] and resolve_vocabulary(None) == SceneVocabulary()
    assert resolve_vocabulary({"shapes": ["star"]}).shapes == ("star",)
    world = ToyWorld(ToyWorldConfig(vocabulary=core))
    for index in range(40):
        scene = world.scene(index)
        assert len(scene.objects) == 1 and scene.camera.kind == "still" and scene.background.kind == "solid"
        assert scene.objects[0].shape in core.shapes and scene.objects[0].motion in core.motions
    text = describe_vocabulary("core")
    assert "one flat shape" in text and "shapes:      circle, square, triangle, star" in text and "dolly" not in text
    assert "dolly zoom" in describe_vocabulary()
    with pytest.raises(ConfigError, match="unknown toy vocabulary 'tiny'"):
        resolve_vocabulary("tiny")
    with pytest.raises(ConfigError, match="unknown field"):
        resolve_vocabulary({"smells": ["sweet"]})


def test_captions() -> None:
    scene = _scene("left")
    assert canonical_caption(scene) == "a red circle moving left on a blue background"
    two = SceneSpec(
        (*scene.objects, ObjectSpec("star", "orange", "large", "rotating", 0.3, (0.5, 0.0), spin=1.0)),
        BackgroundSpec("stripes", "white"),
        CameraSpec("zoom_in", zoom=1.5),
    )
    assert canonical_caption(two) == (
        "a red circle moving left and a large orange star rotating on a white striped background, the camera zooms in"
    )
    paraphrases = {paraphrase_caption(scene, np.random.default_rng(seed)) for seed in range(60)}
    assert len(paraphrases) > 10
    for synonym in ("crimson", "scarlet", "disc", "drifting left", "cobalt", "backdrop"):
        assert any(synonym in caption for caption in paraphrases), synonym
    for caption in paraphrases:
        assert any(word in caption for word in COLOR_WORDS["red"])
        assert any(word in caption for word in SHAPE_WORDS["circle"])
        assert not re.search(r"\ba [aeiou]", caption), caption
    still_camera_words = {words.strip(", ") for words in CAMERA_WORDS["still"] if words}
    assert any(word in caption for caption in paraphrases for word in still_camera_words)


def test_degradations_have_the_stated_effect() -> None:
    textured = BackgroundSpec("checkerboard", "yellow", cell=0.3)
    clean = render_scene(_scene("right", background=textured, travel=0.8), 64, 64, 16)
    rng = np.random.default_rng(0)

    def degraded(kind: str, strength: float = 0.8) -> np.ndarray:
        out = apply_degradation(clean, Degradation(kind, strength), rng)
        assert out.shape == clean.shape and out.dtype == np.uint8
        return out

    def sharpness(frames: np.ndarray) -> float:
        return float(np.abs(np.diff(frames.astype(float), axis=2)).mean())

    assert sharpness(degraded("blur")) < 0.6 * sharpness(clean)
    noise = degraded("noise").astype(float) - clean
    assert 20 < noise.std() < 45  # sigma = 8 + 32 * 0.8 = 33.6, minus clipping at 0 and 255
    assert np.abs(degraded("compression").astype(int) - clean).mean() > 2
    dropped = degraded("frame_drop")
    repeats = [t for t in range(1, len(clean)) if np.array_equal(dropped[t], dropped[t - 1])]
    assert 2 <= len(repeats) <= 12  # 20-50 % of the 15 droppable frames, give or take chance
    assert np.array_equal(dropped[0], clean[0])
    assert all(any(np.array_equal(frame, source) for source in clean) for frame in dropped)
    brightness = degraded("flicker").reshape(len(clean), -1).mean(axis=1) / clean.reshape(len(clean), -1).mean(axis=1)
    assert brightness.max() - brightness.min() > 0.3
    # The clean frames are untouched by degrading a copy.
    frames = clean.copy()
    apply_degradation(frames, Degradation("noise", 1.0), rng)
    assert np.array_equal(frames, clean)
    with pytest.raises(ConfigError):
        apply_degradation(frames, Degradation("melt", 0.5), rng)


def test_degraded_fraction_marks_clips_with_ground_truth() -> None:
    world = ToyWorld(ToyWorldConfig(degraded_fraction=0.4, vocabulary=SIMPLE))
    kinds = [world.degradation(i).kind for i in range(400)]
    share = sum(kind != "none" for kind in kinds) / len(kinds)
    assert 0.3 < share < 0.5
    assert {kind for kind in kinds if kind != "none"} == {"blur", "noise", "compression", "frame_drop", "flicker"}
    index = kinds.index("blur")
    clip = world.clip(index)
    assert clip.attributes["degradation"] == "blur" and 0.3 <= clip.attributes["degradation_strength"] <= 1.0
    clean = ToyWorld(ToyWorldConfig(vocabulary=SIMPLE)).clip(index)
    assert np.array_equal(world.clip(index, degradation=Degradation()).frames, clean.frames)
    assert not np.array_equal(clip.frames, clean.frames)


def test_in_memory_dataset_matches_the_world() -> None:
    world = ToyWorld(ToyWorldConfig(num_frames=8, height=32, width=32))
    dataset = ToyWorldDataset(world, size=5, start=10)
    sample = dataset[2]
    assert len(dataset) == 5
    assert torch.equal(sample["video"], frames_to_tensor(world.clip(12).frames))
    assert sample["video"].shape == (3, 8, 32, 32) and sample["caption"] == world.clip(12).caption
    assert sample["fps"] == 8 and sample["path"] == "toyworld:0/12"
    with pytest.raises(IndexError):
        dataset[5]


def test_make_dataset_writes_files_the_loader_reads(tmp_path: Path) -> None:
    config = ToyWorldConfig(num_frames=8, height=32, width=32, degraded_fraction=0.3, vocabulary=SIMPLE)
    report = make_dataset(tmp_path / "toy", 6, config)
    assert report.num_clips == 6 and report.clips_per_second > 0

    with report.csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert list(rows[0]) == ["path", "text", "canonical_text", *ATTRIBUTE_COLUMNS]
    world = ToyWorld(config)
    for row in rows:
        clip = world.clip(int(row["index"]))
        assert row["text"] == clip.caption and row["shape"] == clip.attributes["shape"]
        assert row["degradation"] == clip.degradation.kind
    settings = json.loads((tmp_path / "toy" / "toyworld.json").read_text())
    assert settings["num_clips"] == 6 and settings["config"]["seed"] == 0

    loader = VideoClipDataset.from_source(
        report.csv_path, FrameSampling(video_length=8, height=32, width=32), shuffle=False
    )
    samples = list(loader)
    assert len(samples) == 6 and loader.skipped == 0
    for row, sample in zip(rows, samples, strict=True):
        assert sample["caption"] == row["text"] and sample["fps"] == 8
        if row["degradation"] == "none":  # (H.264 smooths away much of the "noise" degradation)
            expected = frames_to_tensor(world.clip(int(row["index"])).frames)
            assert (sample["video"] - expected).abs().mean() < 0.015  # crf 10, 4:4:4: about 1 grey level

    with pytest.raises(ToyWorldError, match="--overwrite"):
        make_dataset(tmp_path / "toy", 3, config)
    make_dataset(tmp_path / "toy", 3, config, overwrite=True)
    assert len(list((tmp_path / "toy" / "videos").iterdir())) == 3


def test_cli_make_and_errors(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser(prog="hummingbird")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "toyworld",
            "make",
            "--n",
            "3",
            "-o",
            str(tmp_path / "cli"),
            "--size",
            "32x48",
            "--frames",
            "6",
            "--seed",
            "9",
            "--shapes",
            "circle,star",
            "--canonical-captions",
        ]
    )
    assert args.func(args) == 0
    assert "wrote 3 clips (32x48, 6 frames at 8 fps)" in capsys.readouterr().out
    with (tmp_path / "cli" / "clips.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["shape"] for row in rows} <= {"circle", "star"}
    assert all(row["text"] == row["canonical_text"] for row in rows)

    for bad in (
        ["--size", "33", "--pix-fmt", "yuv420p"],
        ["--size", "big"],
        ["--motions", "left,teleport"],
        ["--degraded-fraction", "1.5"],
    ):
        args = parser.parse_args(["toyworld", "make", "--n", "2", "-o", str(tmp_path / "bad"), *bad])
        with pytest.raises(HummingbirdError):
            args.func(args)
    args = parser.parse_args(["toyworld", "vocab"])
    assert args.func(args) == 0 and "dolly zoom" in capsys.readouterr().out
    args = parser.parse_args(["toyworld", "vocab", "--vocabulary", "core"])
    assert args.func(args) == 0 and "dolly" not in capsys.readouterr().out
    args = parser.parse_args(["toyworld", "vocab", "--vocabulary", "tiny"])
    with pytest.raises(HummingbirdError, match="unknown toy vocabulary"):
        args.func(args)
