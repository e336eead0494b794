"""Write generated frames to disk: H.264 mp4 (PyAV) or gif."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hummingbird_t2v.data.video_io import write_gif, write_video
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.pipelines.hummingbird import to_uint8

VIDEO_FORMATS = ("mp4", "gif")


def export_to_video(frames: np.ndarray, path: str | Path, fps: float, *, crf: int = 10) -> Path:
    """`frames` (T, H, W, 3), float in [0, 1] or uint8. The format follows the suffix (.mp4 or .gif).
    crf 10 is what the official inference script writes: near-lossless."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in VIDEO_FORMATS:
        raise ConfigError(f"cannot write {path.name}: the file name must end in .mp4 or .gif")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        frames = to_uint8(frames)
    if suffix == "mp4":
        write_video(path, frames, fps, crf=crf)
    else:
        write_gif(path, frames, fps)
    return path
