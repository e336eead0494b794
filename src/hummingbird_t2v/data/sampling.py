"""Which frames of a clip to train on, and how to turn them into the model's input tensor.

The rules follow the official WebVid loaders (spec §5.4): `video_length` frames taken every
`stride` frames, with the stride fixed or drawn from 1..`frame_stride`; a clip too short for the
drawn stride falls back to stride = n_frames // video_length; the start is random, optionally
skipping the first `head_skip` frames (title cards, fades) when the spare range exceeds it. Frames
are resized so they cover the target size (for the usual landscape clips this is "short side to
the target height") and centre-cropped; pixels map to [-1, 1]. The fps condition is the source
fps // stride, or a constant when `fixed_fps` is set (the stage-2 loader ignores the source fps
and always uses 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hummingbird_t2v.errors import ConfigError, HummingbirdError

__all__ = [
    "STAGE1_SAMPLING",
    "STAGE2_SAMPLING",
    "ClipTooShortError",
    "FrameSampling",
    "FrameWindow",
    "choose_frame_window",
    "fps_condition",
    "frames_to_tensor",
    "resize_center_crop",
]


@dataclass(frozen=True)
class FrameSampling:
    """How to cut a training clip out of a video."""

    video_length: int = 16
    frame_stride: int = 1  # the stride, or its maximum when random_stride is set
    random_stride: bool = False  # draw the stride uniformly from 1..frame_stride per sample
    head_skip: int = 0  # frames to avoid at the start when the clip is long enough
    height: int = 320
    width: int = 512
    fixed_fps: int | None = None  # report this fps condition instead of source_fps // stride

    def __post_init__(self) -> None:
        if self.video_length < 1 or self.frame_stride < 1 or self.head_skip < 0:
            raise ConfigError(
                f"frame sampling needs video_length >= 1, frame_stride >= 1 and head_skip >= 0; got "
                f"{self.video_length}, {self.frame_stride}, {self.head_skip}"
            )
        if self.height < 1 or self.width < 1:
            raise ConfigError(f"frame size must be positive, got {self.height}x{self.width}")
        if self.fixed_fps is not None and self.fixed_fps < 1:
            raise ConfigError(f"fixed_fps must be >= 1 (or None), got {self.fixed_fps}")


# The official stage-1 loader: 16 frames, stride U{1..6}, skip the first 35 frames, 320x512.
STAGE1_SAMPLING = FrameSampling(video_length=16, frame_stride=6, random_stride=True, head_skip=35)
# The official stage-2 loader: 26 frames, no head skip, the fps condition is always 8.
STAGE2_SAMPLING = FrameSampling(video_length=26, frame_stride=6, random_stride=True, fixed_fps=8)


class ClipTooShortError(HummingbirdError):
    """The video has fewer frames than one training clip needs."""


@dataclass(frozen=True)
class FrameWindow:
    start: int
    stride: int
    length: int

    @property
    def last(self) -> int:
        return self.start + (self.length - 1) * self.stride


def choose_frame_window(num_frames: int, sampling: FrameSampling, rng: np.random.Generator) -> FrameWindow:
    """Draw the stride and start of one clip from a video of `num_frames` frames."""
    length = sampling.video_length
    if num_frames < length:
        raise ClipTooShortError(f"the video has {num_frames} frames, a clip needs {length}")
    stride = int(rng.integers(1, sampling.frame_stride + 1)) if sampling.random_stride else sampling.frame_stride
    if (length - 1) * stride + 1 > num_frames:
        stride = num_frames // length  # the official fallback; >= 1 because num_frames >= length
    spare = num_frames - ((length - 1) * stride + 1)
    low = sampling.head_skip if spare > sampling.head_skip else 0
    start = int(rng.integers(low, spare + 1))
    return FrameWindow(start=start, stride=stride, length=length)


def fps_condition(source_fps: float, stride: int, sampling: FrameSampling) -> int:
    """The fps value the U-Net is conditioned on for a clip read with `stride`."""
    if sampling.fixed_fps is not None:
        return sampling.fixed_fps
    return int(source_fps // stride)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> float32 (C, T, H, W) in [-1, 1], the layout the VAE encodes."""
    # numpy, not torch: a clip is too small for torch's intra-op threads, whose start-up costs
    # dominate (and stall badly on a busy machine) when a loader runs in the main process.
    channels_first = np.ascontiguousarray(np.asarray(frames, dtype=np.uint8).transpose(3, 0, 1, 2))
    video = np.multiply(channels_first, np.float32(1 / 127.5), dtype=np.float32)
    video -= np.float32(1.0)
    return torch.from_numpy(video)


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Resize uint8 (T, H, W, 3) frames so they cover (height, width), centre-crop, and return
    float32 (C, T, height, width) in [-1, 1]. Downscaling is antialiased (area-like), as image
    libraries do, so thin details do not alias into the training data."""
    source_h, source_w = frames.shape[1], frames.shape[2]
    scale = max(height / source_h, width / source_w)
    # ceil, so the rounded size never falls a pixel short of the crop.
    resized_h = max(height, math.ceil(source_h * scale - 1e-6))
    resized_w = max(width, math.ceil(source_w * scale - 1e-6))
    top = (resized_h - height) // 2
    left = (resized_w - width) // 2
    if (resized_h, resized_w) == (source_h, source_w):
        return frames_to_tensor(frames[:, top : top + height, left : left + width])
    by_frame = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()  # (T, C, H, W)
    by_frame = F.interpolate(
        by_frame, size=(resized_h, resized_w), mode="bilinear", align_corners=False, antialias=scale < 1
    )
    cropped = by_frame[:, :, top : top + height, left : left + width]
    return cropped.permute(1, 0, 2, 3).mul(1 / 127.5).sub_(1.0).clamp_(-1.0, 1.0).contiguous()
