"""Differentiable reward preprocessing: HPS letterbox, CLIP centre crop, video random crop."""

from __future__ import annotations

import pytest
import torch

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.rewards.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocess,
    center_crop,
    letterbox,
    resize_shorter_side,
)


def _normalised(value: float, mean, std) -> torch.Tensor:
    return (value - torch.tensor(mean)) / torch.tensor(std)


def test_letterbox_keeps_the_whole_frame_and_pads_black_like_hps():
    """A 320x512 decoded frame -> 140x224 picture with 42 black rows above and below."""
    frames = torch.full((2, 3, 320, 512), 0.7)
    out = ImagePreprocess(mode="letterbox")(frames)
    assert out.shape == (2, 3, 224, 224)
    black, grey = _normalised(0.0, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), _normalised(0.7, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    rows = out[0].mean(dim=2).T  # (224, 3): the mean of each row per channel
    torch.testing.assert_close(rows[:42], black.expand(42, 3))
    torch.testing.assert_close(rows[182:], black.expand(42, 3))
    torch.testing.assert_close(rows[42:182], grey.expand(140, 3), atol=1e-5, rtol=0)
    tall = letterbox(torch.rand(1, 3, 100, 42), size=50)  # 50x21 picture, odd padding: the extra column goes right
    assert tall.shape == (1, 3, 50, 50)
    assert tall[..., :, :14].abs().sum() == 0 and tall[..., :, 35:].abs().sum() == 0 and tall[..., :, 14].abs().sum() > 0


def test_center_crop_takes_the_middle_after_shorter_side_resize():
    frames = torch.rand(1, 3, 224, 300)
    out = ImagePreprocess(mode="center_crop", mean=(0, 0, 0), std=(1, 1, 1))(frames)
    torch.testing.assert_close(out, frames[..., 38:262])
    assert resize_shorter_side(torch.rand(1, 3, 300, 500), 224, "truncate").shape[-2:] == (224, 373)
    assert resize_shorter_side(torch.rand(1, 3, 300, 500), 224, "round").shape[-2:] == (224, 373)
    assert resize_shorter_side(torch.rand(1, 3, 320, 512), 224, "round").shape[-2:] == (224, 358)
    wide = ImagePreprocess(mode="center_crop", resize_size=256)(torch.rand(2, 3, 320, 512))
    assert wide.shape == (2, 3, 224, 224)


def test_random_crop_is_one_window_for_all_frames_and_seedable():
    frames = torch.rand(1, 3, 224, 260).expand(4, -1, -1, -1)  # four identical frames
    preprocess = ImagePreprocess(mode="random_crop", mean=(0, 0, 0), std=(1, 1, 1))
    a = preprocess(frames, torch.Generator().manual_seed(0))
    b = preprocess(frames, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert all(torch.equal(a[0], a[i]) for i in range(4))

    def offset(crop: torch.Tensor) -> int:
        (found,) = [o for o in range(37) if torch.equal(frames[0, :, :, o : o + 224], crop)]
        return found

    offset(a[0])
    assert len({offset(preprocess(frames)[0]) for _ in range(12)}) > 1  # not always the same window


@pytest.mark.parametrize("mode", ["letterbox", "center_crop", "random_crop"])
def test_preprocessing_is_differentiable_in_any_input_dtype(mode):
    frames = torch.rand(3, 3, 40, 72, dtype=torch.float16, requires_grad=True)
    out = ImagePreprocess(size=32, mode=mode, mean=IMAGENET_MEAN, std=IMAGENET_STD)(frames)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 32, 32)
    out.square().sum().backward()
    assert frames.grad is not None and frames.grad.abs().sum() > 0


def test_preprocess_settings_are_validated():
    with pytest.raises(ConfigError, match="mode"):
        ImagePreprocess(mode="squash")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std"):
        ImagePreprocess(std=(0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="resize_size"):
        ImagePreprocess(mode="letterbox", resize_size=256)
    with pytest.raises(ConfigError, match="cannot crop"):
        center_crop(torch.rand(1, 3, 10, 30), 20)
