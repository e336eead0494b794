"""Probe and decode videos with PyAV for analysis: container facts, frames at a fixed rate, downscaled.

A broken file never raises out of this module's public functions except as `ProbeFailure`, whose
`reason` is a short code recorded in the manifest (see `FAILURE_REASONS`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import av
import av.stream
import numpy as np

FAILURE_REASONS = {
    "missing": "the file does not exist",
    "empty_file": "the file has zero bytes",
    "unreadable": "not a media container FFmpeg can open (corrupt, truncated index, or not a video)",
    "audio_only": "the container has audio but no video stream",
    "no_video_stream": "the container has no video stream",
    "undecodable": "the video stream yields no decodable frame",
    "truncated": "the video stream ends (or breaks) well before its declared duration",
    "too_short": "fewer decodable frames than the analysis needs",
}


class ProbeFailure(Exception):
    """A file that cannot be analysed; `reason` is a key of FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream."""

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: str
    frame_count: int  # declared, or estimated from duration x fps when the container does not say
    bit_rate: int
    has_audio: bool
    container: str


@dataclass(frozen=True)
class DecodePlan:
    """Which frames to keep for analysis, and at what size."""

    sample_fps: float = 8.0  # frames per second kept for motion analysis
    analysis_short_side: int = 128  # their short side after downscaling
    max_seconds: float = 10.0  # analyse at most this much of the clip, from its start
    quality_frames: int = 6  # native-resolution luma frames kept for the quality measures
    quality_crop: int = 512  # centre crop (pixels, multiple of 16) of those frames, bounds cost on 4K input
    min_frames: int = 4  # fewer sampled frames than this is a probe failure (too_short)


@dataclass
class DecodedClip:
    info: VideoInfo
    frames: np.ndarray  # (T, h, w, 3) uint8 RGB at plan.sample_fps, downscaled
    times: np.ndarray  # (T,) seconds of each kept frame
    quality_luma: list[np.ndarray] = field(default_factory=list)  # native-resolution luma crops
    luma_means: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean luma of every decoded frame
    decoded_seconds: float = 0.0


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    for stream in container.streams.video:
        # A still cover image in an audio file is a "video" stream with the attached_pic flag.
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        return stream
    return None


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise ProbeFailure("missing", str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise ProbeFailure("empty_file", str(path))
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        raise ProbeFailure("unreadable", f"{type(error).__name__}: {error}") from None


def _info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    else:
        duration = 0.0
    frame_count = int(stream.frames or 0) or (round(duration * fps) if fps > 0 else 0)
    context = stream.codec_context
    return VideoInfo(
        duration_s=duration,
        fps=fps,
        width=int(context.width or 0),
        height=int(context.height or 0),
        codec=str(context.name or ""),
        pix_fmt=str(context.pix_fmt or ""),
        frame_count=frame_count,
        bit_rate=int(container.bit_rate or 0),
        has_audio=len(container.streams.audio) > 0,
        container=str(container.format.name),
    )


def _require_video(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    stream = _video_stream(container)
    if stream is None:
        reason = "audio_only" if container.streams.audio else "no_video_stream"
        raise ProbeFailure(reason, f"streams: {[s.type for s in container.streams]}")
    return stream


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Container facts without decoding; raises ProbeFailure for files that are not usable video."""
    with _open(Path(path)) as container:
        return _info(container, _require_video(container))


def _analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = min(1.0, short_side / max(1, min(width, height)))
    # Even sizes keep swscale's chroma handling exact and make later 2x pyramids clean.
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="gray")


def _centre_crop(image: np.ndarray, crop: int) -> np.ndarray:
    # Offsets are multiples of 16 so that codec block boundaries stay on the 8-pixel grid.
    height, width = image.shape
    top = max(0, (height - crop) // 2) // 16 * 16
    left = max(0, (width - crop) // 2) // 16 * 16
    return image[top : top + crop, left : left + crop]


def decode_for_analysis(path: str | os.PathLike[str], plan: DecodePlan = DecodePlan()) -> DecodedClip:
    """Decode the first `plan.max_seconds` of a clip into the views the analysis stages need."""
    with _open(Path(path)) as container:
        stream = _require_video(container)
        info = _info(container, stream)
        stream.thread_type = "AUTO"
        window = min(plan.max_seconds, info.duration_s) if info.duration_s > 0 else plan.max_seconds
        expected_samples = max(1, math.floor(window * plan.sample_fps))
        quality_every = max(1, expected_samples // max(1, plan.quality_frames))
        sample_period = 1.0 / plan.sample_fps
        frames: list[np.ndarray] = []
        times: list[float] = []
        quality_luma: list[np.ndarray] = []
        luma_means: list[float] = []
        next_sample = 0.0
        last_time = -1.0
        decode_error: str | None = None
        size: tuple[int, int] | None = None
        index = 0
        try:
            for frame in container.decode(stream):
                time = frame.time if frame.time is not None else index / (info.fps or 25.0)
                index += 1
                if time > plan.max_seconds:
                    break
                last_time = max(last_time, time)
                luma = _luma(frame)
                # Strided mean: flicker needs every frame, but not every pixel.
                luma_means.append(float(luma[::4, ::4].mean()))
                if time + 1e-6 < next_sample:
                    continue
                next_sample += sample_period * max(1, math.floor((time + 1e-6 - next_sample) / sample_period) + 1)
                if size is None:
                    size = _analysis_size(frame.width, frame.height, plan.analysis_short_side)
                frames.append(frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA"))
                times.append(time)
                if (len(frames) - 1) % quality_every == 0 and len(quality_luma) < plan.quality_frames:
                    quality_luma.append(np.ascontiguousarray(_centre_crop(luma, plan.quality_crop)))
        except (av.FFmpegError, OSError, ValueError) as error:
            decode_error = f"{type(error).__name__}: {error}"

    if not frames:
        raise ProbeFailure("undecodable", decode_error or "no frame decoded")
    decoded_seconds = last_time + (1.0 / info.fps if info.fps else 0.0)
    # A stream that stops early without an error is truncated too (a cut file with its index first).
    expected_end = min(window, info.duration_s) if info.duration_s > 0 else 0.0
    if decode_error is not None and decoded_seconds < expected_end - 0.25:
        raise ProbeFailure("truncated", f"decoding broke at {decoded_seconds:.2f}s of {info.duration_s:.2f}s ({decode_error})")
    if expected_end > 0 and decoded_seconds < 0.9 * expected_end - 0.1:
        raise ProbeFailure("truncated", f"stream ends at {decoded_seconds:.2f}s of a declared {info.duration_s:.2f}s")
    if len(frames) < plan.min_frames:
        raise ProbeFailure("too_short", f"{len(frames)} frames at {plan.sample_fps:g} fps (need {plan.min_frames})")
    return DecodedClip(
        info=info,
        frames=np.stack(frames),
        times=np.asarray(times, np.float64),
        quality_luma=quality_luma,
        luma_means=np.asarray(luma_means, np.float32),
        decoded_seconds=decoded_seconds,
    )
