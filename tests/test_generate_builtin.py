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


def _centroid_x(frame):
    """Horizontal centre of a frame's pixels brighter than its mean, in [0, 1] of the width."""
    import torch

    brightness = frame.mean(dim=0)  # (H, W)
    weights = (brightness - brightness.mean()).clamp(min=0).sum(dim=0)
    columns = torch.linspace(0, 1, weights.numel())
    return float((weights * columns).sum() / weights.sum())


def test_the_shipped_caption_prior_starts_objects_where_their_path_begins(folder):
    """Decoded, the prior's mean clip for "moving right" has the object's mass travel right, and
    for "moving left" travel left: the direction the sampler's start now carries."""
    import torch

    pipe = HummingbirdPipeline.from_pretrained(folder)
    assert pipe.prior is not None
    prompts = [f"a large white square {motion} on a black background" for motion in ("moving right", "moving left", "standing still")]
    with torch.no_grad():
        mean = pipe.prior(pipe.encode_prompt(prompts), 8, 16, 16)
        video = pipe.vae.decode(mean)  # (3, 3, 8, 64, 64)
    right, left, still = (_centroid_x(clip[:, -1]) - _centroid_x(clip[:, 0]) for clip in video)
    assert right > 0.2 and left < -0.2 and abs(still) < 0.1, (right, left, still)  # measured: 0.41, -0.38, -0.05
