"""Temporal flickering as VBench scores it.

VBench's temporal-flickering dimension reads every frame of a video as 8-bit RGB, takes the mean
absolute difference between each pair of consecutive frames (over all pixels and channels),
averages those over the video, and maps it to a score: (255 - mean difference) / 255, so 1.0 is a
perfectly static video. The dimension's value is the mean score over the videos. VBench applies it
to videos of static-scene prompts (it filters out moving videos first); on videos with intended
motion the score also counts that motion, so compare it only between videos of the same prompts.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hummingbird_t2v.errors import ConfigError

__all__ = ["mean_temporal_flickering", "temporal_flickering"]


def _as_uint8(frames: np.ndarray) -> np.ndarray:
    """uint8 frames as they are; float frames in [0, 1] rounded to 8 bits as a video file would hold them."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ConfigError(f"frames must be uint8 or floats in [0, 1], got {frames.dtype}")
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def temporal_flickering(frames: np.ndarray) -> float:
    """Score of one video, frames (T, H, W, C) uint8 (or floats in [0, 1]), T >= 2; 1.0 = no change."""
    frames = _as_uint8(frames)
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ConfigError(f"temporal flickering needs frames (T, H, W, C) with T >= 2, got shape {frames.shape}")
    pixels = frames.astype(np.float32)
    mean_difference = float(np.abs(pixels[1:] - pixels[:-1]).mean(axis=(1, 2, 3)).mean())
    return (255.0 - mean_difference) / 255.0


def mean_temporal_flickering(videos: Iterable[np.ndarray]) -> float:
    """The dimension value: mean score over videos."""
    scores = [temporal_flickering(video) for video in videos]
    if not scores:
        raise ConfigError("temporal flickering needs at least one video")
    return float(np.mean(scores))
