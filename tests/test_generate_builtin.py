"""`hummingbird generate PROMPT` with no weights: the toy model that ships inside the package."""

from __future__ import annotations

import av
import pytest

from hummingbird_t2v.cli import main
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.toyworld.builtin import builtin_model_folder, model_toy_vocabulary
from hummingbird_t2v.toyworld.scene import describe_vocabulary


@pytest.fixture(scope="module")
def folder():
    found = builtin_model_folder()
    assert found is not None, "the package must ship assets/toy/model"
    return found


def test_the_shipped_model_fits_the_size_budget(folder):
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 40 * 1024 * 1024
    pipe = HummingbirdPipeline.from_pretrained(folder)
    assert pipe.config.defaults.height == pipe.config.defaults.width == 64


def test_generate_without_weights_uses_the_builtin_model(folder, tmp_path, capsys):
    out = tmp_path / "ball.mp4"
    assert main(["generate", "a red circle bouncing on a crimson zebra background", "--steps", "2", "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "built-in toy model" in printed and "shapes:" in printed
    assert describe_vocabulary(model_toy_vocabulary(folder)) in printed  # the vocabulary it was trained on
    assert "'zebra'" in printed and "'crimson'" not in printed  # a paraphrase it knows, a word it does not
    with av.open(str(out)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 8 and frames[0].shape == (64, 64, 3)


def test_builtin_model_has_no_presets(folder, capsys):
    assert main(["generate", "a red circle", "--model", "hb-0.7b", "-o", "unused.mp4"]) == 2
    assert "no --model preset" in capsys.readouterr().err


def test_a_folder_given_to_model_points_to_weights(folder, capsys):
    assert main(["generate", "a red circle", "--model", str(folder), "-o", "unused.mp4"]) == 2
    assert f"pass --weights {folder}" in capsys.readouterr().err
