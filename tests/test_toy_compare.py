"""`hummingbird toyworld compare`: paired right/wrong counts per attribute and the exact McNemar test."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hummingbird_t2v.cli import main
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.toyworld import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.compare import exact_mcnemar_p, paired_comparison
from hummingbird_t2v.toyworld.evaluator import (
    EVAL_WORLD_SEED,
    SavedEvalVideos,
    eval_scenes,
    save_eval_videos,
)
from hummingbird_t2v.toyworld.scene import VOCABULARY_PRESETS


def test_exact_mcnemar_p_is_a_two_sided_binomial_test_of_the_discordant_pairs():
    assert exact_mcnemar_p(0, 0) == 1.0
    assert exact_mcnemar_p(5, 5) == 1.0
    assert exact_mcnemar_p(0, 5) == pytest.approx(2 / 32)  # both all-one-way outcomes of 5 coin tosses
    assert exact_mcnemar_p(10, 15) == exact_mcnemar_p(15, 10)
    # 21 against 11: 2 * P(X <= 11) for X ~ Binomial(32, 1/2)
    assert exact_mcnemar_p(11, 21) == pytest.approx(2 * sum(math.comb(32, k) for k in range(12)) / 2**32)
    assert 0.1 < exact_mcnemar_p(11, 21) < 0.12
    assert exact_mcnemar_p(2, 30) < 1e-6
    with pytest.raises(ConfigError, match=">= 0"):
        exact_mcnemar_p(-1, 3)


class _ReadsAsStored:
    """Stands in for the toy evaluator: a video's first pixel indexes the reading it is given."""

    def __init__(self, readings):
        self.readings = readings

    def predict(self, videos):
        return [self.readings[int(video[0, 0, 0, 0])] for video in videos]


def _saved(codes, prompts, attributes):
    videos = np.zeros((len(codes), 2, 4, 4, 3), np.uint8)
    videos[:, 0, 0, 0, 0] = codes
    return SavedEvalVideos("m", videos, prompts, attributes, EVAL_WORLD_SEED, VOCABULARY_PRESETS["core"])


def test_paired_counts_follow_each_video_and_refuse_different_prompts():
    attributes = [{"color": "red"}, {"color": "blue"}, {"color": "red"}, {"color": "green"}]
    prompts = ["a", "b", "c", "d"]
    readings = [{"color": "red"}, {"color": "blue"}, {"color": "green"}, {"color": "grey"}]
    a = _saved([0, 1, 3, 2], prompts, attributes)  # right, right, wrong, right
    b = _saved([0, 3, 0, 3], prompts, attributes)  # right, wrong, right, wrong
    (counts,) = paired_comparison(a, b, _ReadsAsStored(readings)).values()
    assert (counts.both, counts.only_a, counts.only_b, counts.neither) == (1, 2, 1, 0)
    assert (counts.accuracy_a, counts.accuracy_b) == (0.75, 0.5)
    assert counts.p_value == 1.0
    with pytest.raises(ConfigError, match="different prompts"):
        paired_comparison(a, _saved([0, 1, 3, 2], ["a", "b", "c", "e"], attributes), _ReadsAsStored(readings))


def test_compare_command_on_saved_real_and_damaged_clips(tmp_path, capsys):
    """Real clips against the same clips with every frame turned grey: colour, shape and size are
    read right only in the real ones, so those attributes differ with a tiny p-value."""
    count = 24
    _, prompts, attributes = eval_scenes(count, vocabulary="core")
    world = ToyWorld(ToyWorldConfig(seed=EVAL_WORLD_SEED, vocabulary=VOCABULARY_PRESETS["core"]))
    real = np.stack([world.clip(i).frames for i in range(count)])
    grey = np.full_like(real, 128)
    for name, videos in (("real.npz", real), ("grey.npz", grey)):
        save_eval_videos(tmp_path / name, SavedEvalVideos(name, videos, prompts, attributes, EVAL_WORLD_SEED, VOCABULARY_PRESETS["core"]))
    assert main(["toyworld", "compare", str(tmp_path / "real.npz"), str(tmp_path / "grey.npz"), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert f"{count} prompts" in out and "McNemar p" in out
    record = json.loads((tmp_path / "c.json").read_text())["attributes"]
    assert record["color"]["accuracy_a"] == 1.0 and record["color"]["only_b"] == 0
    assert record["color"]["only_a"] >= 20 and record["color"]["p_value"] < 1e-5
    assert record["shape"]["p_value"] < 1e-3
    # Same videos on both sides: nothing differs.
    assert main(["toyworld", "compare", str(tmp_path / "real.npz"), str(tmp_path / "real.npz"), "--json", str(tmp_path / "s.json")]) == 0
    same = json.loads((tmp_path / "s.json").read_text())["attributes"]
    assert all(a["only_a"] == a["only_b"] == 0 and a["p_value"] == 1.0 for a in same.values())
