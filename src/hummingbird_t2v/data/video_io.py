"""Reading, probing and writing video files with PyAV (FFmpeg), plus GIF export with Pillow.

Frames are always uint8 RGB arrays shaped (T, H, W, 3). Every failure to open or decode a file
becomes a `VideoDecodeError` that names the file, so callers (the dataset, the curation stages)
can skip a bad clip without catching FFmpeg's own exception zoo.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from hummingbird_t2v.errors import ConfigError, HummingbirdError

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "decode_video_bytes",
    "encode_video_bytes",
    "probe_video",
    "read_video",
    "write_gif",
    "write_video",
]

# Pixel formats with chroma at half the width (4:2:2) or half the width and height (4:2:0): their
# encoders reject odd sizes.
_SUBSAMPLED_PREFIXES = ("yuv420", "yuvj420", "yuv422", "yuvj422", "nv12", "nv21")
# Frames at least this large (320x240) are decoded with FFmpeg's threads.
_THREADED_DECODE_PIXELS = 320 * 240
# Codecs that understand a constant-rate-factor quality setting.
_CRF_CODECS = frozenset({"libx264", "libx265"})


class VideoDecodeError(HummingbirdError):
    """A file that cannot be opened or decoded as a video (missing, empty, corrupt, not a video)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its first video stream, without decoding frames."""

    duration: float  # seconds
    fps: float
    num_frames: int
    width: int
    height: int
    codec: str


def _as_path(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path))


@contextmanager
def _open_video(source: str | os.PathLike[str] | io.BytesIO, label: str) -> Iterator[tuple[Any, Any]]:
    """Open `source` for reading and yield (container, first video stream); errors name `label`."""
    if not isinstance(source, io.BytesIO):
        path = _as_path(source)
        if not path.is_file():
            raise VideoDecodeError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise VideoDecodeError(f"{label}: the file is empty (0 bytes)")
        source = str(path)
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error  # FFmpeg's text without the repeated path
        raise VideoDecodeError(f"{label}: cannot open as a video ({reason})") from error
    try:
        if not container.streams.video:
            raise VideoDecodeError(f"{label}: the file has no video stream")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _stream_fps(stream: Any, label: str) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        raise VideoDecodeError(f"{label}: the video stream has no frame rate")
    return float(rate)


def _probe_open(container: Any, stream: Any, label: str) -> VideoInfo:
    fps = _stream_fps(stream, label)
    num_frames = int(stream.frames or 0)
    if num_frames == 0:
        # Some containers (WebM, raw streams) carry no frame count: count packets, which is a
        # demux without decoding and still cheap.
        try:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise VideoDecodeError(f"{label}: corrupt video stream ({error})") from error
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = num_frames / fps
    codec_context = stream.codec_context
    return VideoInfo(
        duration=duration,
        fps=fps,
        num_frames=num_frames,
        width=int(codec_context.width),
        height=int(codec_context.height),
        codec=str(codec_context.name),
    )


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the header of `path`: duration, fps, frame count, size and codec (no frame decoding)."""
    label = str(path)
    with _open_video(path, label) as (container, stream):
        return _probe_open(container, stream, label)


def _decode_frames(
    container: Any, stream: Any, label: str, start: int, num_frames: int | None, stride: int
) -> np.ndarray:
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 0):
        raise ConfigError(
            f"read_video: need start >= 0, stride >= 1 and num_frames >= 0 (or None); "
            f"got start={start}, stride={stride}, num_frames={num_frames}"
        )
    height, width = stream.codec_context.height, stream.codec_context.width
    if num_frames == 0:
        return np.zeros((0, height, width, 3), np.uint8)
    if height * width >= _THREADED_DECODE_PIXELS:
        # Threaded decoding speeds up real-size clips on multi-core machines; for tiny frames
        # starting the threads costs more than it saves.
        stream.thread_type = "AUTO"
    # One reformatter for the whole clip keeps FFmpeg's colour-conversion context between frames
    # (frame.to_ndarray(format=...) rebuilds it per frame: 4x slower on 64x64 clips).
    to_rgb = VideoReformatter()
    last_index = None if num_frames is None else start + (num_frames - 1) * stride
    frames: list[np.ndarray] = []
    try:
        # Decode sequentially and count frames: exact for variable frame rates and broken
        # timestamps, where seeking by time would land on the wrong frame.
        for index, frame in enumerate(container.decode(stream)):
            if index >= start and (index - start) % stride == 0:
                image = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                if frames and image.shape != frames[0].shape:
                    raise VideoDecodeError(
                        f"{label}: the frame size changes mid-stream ({frames[0].shape[:2]} -> {image.shape[:2]})"
                    )
                frames.append(image)
            if last_index is not None and index >= last_index:
                break
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoDecodeError(f"{label}: decoding failed after {len(frames)} frames ({error})") from error
    if not frames:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.stack(frames)


def read_video(
    path: str | os.PathLike[str], *, start: int = 0, num_frames: int | None = None, stride: int = 1
) -> tuple[np.ndarray, float]:
    """Decode frames start, start+stride, ... (at most `num_frames`; all to the end when None).

    Returns (frames uint8 (T, H, W, 3), source fps). T is smaller than `num_frames` when the
    video ends first (the caller decides whether that is too short); it is 0 when `start` lies
    past the end. Raises `VideoDecodeError` for a file that cannot be opened or decoded.
    """
    label = str(path)
    with _open_video(path, label) as (container, stream):
        fps = _stream_fps(stream, label)
        return _decode_frames(container, stream, label, start, num_frames, stride), fps


def decode_video_bytes(data: bytes, *, label: str = "<in-memory video>") -> tuple[np.ndarray, float]:
    """Decode every frame of an encoded video held in memory: (frames uint8 (T, H, W, 3), fps)."""
    if not data:
        raise VideoDecodeError(f"{label}: the data is empty (0 bytes)")
    with _open_video(io.BytesIO(data), label) as (container, stream):
        fps = _stream_fps(stream, label)
        return _decode_frames(container, stream, label, 0, None, 1), fps


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ConfigError(
            f"video frames must be a non-empty uint8 array shaped (T, H, W, 3); got dtype "
            f"{frames.dtype} and shape {frames.shape} (convert with np.clip(x, 0, 255).astype(np.uint8))"
        )
    return frames


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Repeat the last row/column when H or W is odd: 4:2:0 encoders reject odd sizes."""
    pad_h = frames.shape[1] % 2
    pad_w = frames.shape[2] % 2
    if pad_h == 0 and pad_w == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _encode_into(container: Any, frames: np.ndarray, fps: float, codec: str, crf: int, pix_fmt: str) -> None:
    if not np.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive number, got {fps}")
    if pix_fmt.startswith(_SUBSAMPLED_PREFIXES):
        frames = _pad_to_even(frames)
    options = {"crf": str(int(crf))} if codec in _CRF_CODECS else {}
    try:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=options)
    except (av.FFmpegError, ValueError) as error:
        raise ConfigError(f"cannot encode with codec {codec!r} ({error}); try codec='libx264'") from error
    stream.height, stream.width = frames.shape[1], frames.shape[2]
    try:
        stream.pix_fmt = pix_fmt
    except (av.FFmpegError, ValueError) as error:
        raise ConfigError(f"unknown pixel format {pix_fmt!r} ({error}); try 'yuv420p'") from error
    for image in frames:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 10,
    pix_fmt: str = "yuv420p",
) -> None:
    """Encode `frames` (uint8 (T, H, W, 3)) to `path`, atomically (temp file + os.replace).

    The container follows the file extension (.mp4, .mkv, ...). `crf` (constant rate factor; 10
    is what the official sampler writes, lower is better) applies to x264/x265 only. The default
    `pix_fmt` yuv420p plays everywhere but stores colour at half resolution, which needs even
    sizes (an odd height or width is padded by repeating the last row/column) and smears colour
    edges of tiny frames; "yuv444p" keeps full-resolution colour (H.264 High 4:4:4, which some
    browsers do not play).
    """
    frames = _check_frames(frames)
    target = _as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temp name keeps the extension because FFmpeg picks the container from it.
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(handle)
    try:
        try:
            container = av.open(temp_name, mode="w")
        except (av.FFmpegError, ValueError) as error:
            raise ConfigError(f"{target}: no video container for extension {target.suffix!r}; use .mp4") from error
        try:
            _encode_into(container, frames, fps, codec, crf, pix_fmt)
        finally:
            container.close()
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def encode_video_bytes(
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 10,
    pix_fmt: str = "yuv420p",
    container_format: str = "mp4",
) -> bytes:
    """Encode `frames` in memory and return the file's bytes (same rules as `write_video`)."""
    frames = _check_frames(frames)
    buffer = io.BytesIO()
    container = av.open(buffer, mode="w", format=container_format)
    try:
        _encode_into(container, frames, fps, codec, crf, pix_fmt)
    finally:
        container.close()
    return buffer.getvalue()


def write_gif(path: str | os.PathLike[str], frames: np.ndarray, fps: float) -> None:
    """Write an endlessly looping GIF, atomically. GIF delays are whole centiseconds, so the
    played frame rate is the nearest one that 100/fps rounds to."""
    from PIL import Image

    frames = _check_frames(frames)
    if not np.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive number, got {fps}")
    target = _as_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(image) for image in frames]
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".gif")
    os.close(handle)
    try:
        images[0].save(
            temp_name,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(10, round(1000 / fps / 10) * 10),
            loop=0,
        )
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
