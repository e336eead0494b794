"""`hummingbird toyworld probe`: does a model's noise prediction use one word of the caption?"""

from __future__ import annotations

import dataclasses

import pytest

from hummingbird_t2v.cli import main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.toyworld import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.builtin import builtin_model_folder
from hummingbird_t2v.toyworld.captions import canonical_caption
from hummingbird_t2v.toyworld.probe import (
    ProbeRow,
    probe_caption_word,
    probe_direction_travel,
    swap_word,
)
from hummingbird_t2v.toyworld.scene import VOCABULARY_PRESETS

CORE = VOCABULARY_PRESETS["core"]


def _core_scenes(count: int = 60):
    world = ToyWorld(ToyWorldConfig(seed=2, vocabulary=CORE))
    return [world.scene(i) for i in range(count)]


def test_direction_swaps_the_sign_of_the_motion_and_nothing_else():
    swapped_any = False
    for scene in _core_scenes():
        other = swap_word(scene, "direction", CORE)
        motion = scene.objects[0].motion
        if motion == "still":
            assert other is None
            continue
        swapped_any = True
        assert other.objects[0].motion == {"left": "right", "right": "left", "up": "down", "down": "up"}[motion]
        assert canonical_caption(other) == canonical_caption(scene).replace(f"moving {motion}", f"moving {other.objects[0].motion}")
        assert other.objects[0].center == scene.objects[0].center and other.background == scene.background
    assert swapped_any


def test_axis_color_and_shape_swaps():
    for scene in _core_scenes():
        first = scene.objects[0]
        axis = swap_word(scene, "axis", CORE)
        if first.motion in ("left", "right"):
            assert axis.objects[0].motion in ("up", "down")
        elif first.motion in ("up", "down"):
            assert axis.objects[0].motion in ("left", "right")
        color = swap_word(scene, "color", CORE).objects[0].color
        assert color in CORE.colors and color not in (first.color, scene.background.color)  # never the background
        shape = swap_word(scene, "shape", CORE).objects[0].shape
        assert shape in CORE.shapes and shape != first.shape
    with pytest.raises(ConfigError, match="unknown swap"):
        swap_word(_core_scenes(1)[0], "size", CORE)


def test_probe_row_word_share_and_sign_test():
    row = ProbeRow(timestep=900, asked=1.0, swapped=1.5, empty=2.0, prefers_asked=10, prefers_swapped=0)
    assert row.word_share == pytest.approx(0.5)
    assert row.p_value == pytest.approx(2 / 2**10)


@pytest.fixture(scope="module")
def builtin():
    return HummingbirdPipeline.from_pretrained(builtin_model_folder())


def test_the_builtin_model_uses_the_color_word(builtin):
    """The shipped model paints the asked colour (docs/toy-model.md), so the true caption predicts the
    noise of a real clip better than one naming another colour, in (nearly) every clip."""
    (row,) = probe_caption_word(builtin, swap="color", count=8, timesteps=[700], vocabulary="core", batch_size=8)
    assert row.prefers_asked >= 7 and row.swapped > row.asked and row.word_share > 0.5
    # A row depends on its timestep's seed only, not on the batch size or the other timesteps probed.
    again = probe_caption_word(builtin, swap="color", count=8, timesteps=[999, 700], vocabulary="core", batch_size=3)
    assert again[1].prefers_asked == row.prefers_asked
    assert again[1].asked == pytest.approx(row.asked, rel=1e-4) and again[1].swapped == pytest.approx(row.swapped, rel=1e-4)


def test_probe_rejects_bad_input(builtin, capsys):
    with pytest.raises(ConfigError, match="timesteps must lie in 0..999"):
        probe_caption_word(builtin, swap="color", count=2, timesteps=[1000])
    with pytest.raises(ConfigError, match="unknown swap 'size'"):
        probe_caption_word(builtin, swap="size", count=2)
    with pytest.raises(ConfigError, match="--n >= 1"):
        probe_caption_word(builtin, swap="color", count=0)
    still_only = dataclasses.replace(CORE, motions=("still",))
    with pytest.raises(ConfigError, match="found only 0 of 2 clips"):
        probe_caption_word(builtin, swap="direction", count=2, vocabulary=still_only)
    assert main(["toyworld", "probe", "--swap", "color", "--timesteps", "9x9"]) == 2
    assert "--timesteps takes comma-separated integers" in capsys.readouterr().err


def test_probe_command_prints_one_row_per_timestep(capsys):
    assert main(["toyworld", "probe", "--swap", "shape", "--n", "2", "--timesteps", "999,500", "--batch-size", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "swap shape, 2 clips" in lines[0] and "asked fits better" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["999", "500"]


def test_probe_noises_with_the_models_latent_rescale(builtin):
    """A teacher trained with VideoCrafter2's latent rescale (use_scale) is probed on s(t)·z0, as it
    was trained: s(0) = 1 leaves t = 0 alone, s(500) = scale_b changes what the model sees."""
    assert not builtin.config.use_scale  # the toy teacher trains without it
    plain = probe_caption_word(builtin, swap="shape", count=2, timesteps=[0, 500], vocabulary="core")
    builtin.config = dataclasses.replace(builtin.config, use_scale=True)
    try:
        rescaled = probe_caption_word(builtin, swap="shape", count=2, timesteps=[0, 500], vocabulary="core")
    finally:
        builtin.config = dataclasses.replace(builtin.config, use_scale=False)
    assert rescaled[0].asked == pytest.approx(plain[0].asked, rel=1e-5)
    assert rescaled[1].asked != pytest.approx(plain[1].asked, rel=1e-3)


def test_travel_probe_reads_which_way_the_one_step_prediction_moves(builtin):
    """At a low noise level x̂₀ is nearly the clip itself, so it moves the clip's way as far as the clip
    does, whatever the caption; rows: the clean clips, each timestep, then pure noise."""
    rows = probe_direction_travel(builtin, count=3, timesteps=[999, 50], vocabulary="core", batch_size=3)
    assert [row.source for row in rows] == ["clean clip", "t=999", "t=50", "pure noise"]
    clean, _, low, _ = rows
    assert clean.true_way == {"asked": 3, "swapped": 3, "empty": 3}  # real toy clips move as captioned
    assert clean.travel["asked"] > 0.3
    for name in ("asked", "swapped", "empty"):
        assert low.travel[name] == pytest.approx(clean.travel["asked"], abs=0.05)
    # The pure-noise row starts where a sampler does (t = 999), whichever timesteps are probed.
    (*_, pure_noise) = probe_direction_travel(builtin, count=3, timesteps=[50], vocabulary="core", batch_size=3)
    assert pure_noise.travel == pytest.approx(rows[-1].travel, abs=1e-5)
    with pytest.raises(ConfigError, match="--travel reads motion"):
        probe_direction_travel(builtin, swap="color", count=2)


def test_probe_command_prints_the_travel_table(capsys):
    args = ["toyworld", "probe", "--swap", "direction", "--n", "2", "--timesteps", "999", "--batch-size", "2", "--travel"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "x̂₀ from" in out
    assert [line.split()[0] for line in out.strip().splitlines()[-3:]] == ["clean", "t=999", "pure"]
