"""PyAV helpers: round trips, frame selection, atomic writes, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hummingbird_t2v.data.video_io import (
    VideoDecodeError,
    decode_video_bytes,
    encode_video_bytes,
    probe_video,
    read_video,
    write_gif,
    write_video,
)
from hummingbird_t2v.errors import ConfigError, HummingbirdError


def _numbered_frames(count: int, height: int = 32, width: int = 48) -> np.ndarray:
    """Frame t is a flat grey of level 20 + 10 t, so a decoded frame tells its index."""
    levels = 20 + 10 * np.arange(count, dtype=np.int64)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).astype(np.uint8)


def _frame_indices(frames: np.ndarray) -> list[int]:
    return [round((float(frame.mean()) - 20) / 10) for frame in frames]


def test_round_trip_keeps_pixels_and_metadata(tmp_path: Path) -> None:
    # Smooth colour ramps that shift per frame: typical content for which crf 10 is near lossless.
    y, x = np.mgrid[0:32, 0:48]
    frames = np.stack(
        [np.stack([(x * 5 + 7 * t) % 256, (y * 7) % 256, np.full_like(x, 40 * t)], axis=-1) for t in range(6)]
    ).astype(np.uint8)
    path = tmp_path / "clip.mp4"
    write_video(path, frames, fps=12)

    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert fps == pytest.approx(12)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 3

    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.codec) == (6, 48, 32, "h264")
    assert info.fps == pytest.approx(12)
    assert info.duration == pytest.approx(6 / 12, abs=1 / 12)


def test_probe_counts_frames_when_the_container_does_not_say(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"  # Matroska headers carry no frame count
    write_video(path, _numbered_frames(7), fps=8)
    info = probe_video(path)
    assert info.num_frames == 7 and info.fps == pytest.approx(8)


def test_read_selects_start_count_and_stride(tmp_path: Path) -> None:
    path = tmp_path / "numbered.mp4"
    write_video(path, _numbered_frames(20), fps=8)

    frames, _ = read_video(path, start=3, num_frames=4, stride=5)
    assert _frame_indices(frames) == [3, 8, 13, 18]
    # Running off the end returns what exists; past the end returns no frames.
    assert _frame_indices(read_video(path, start=15, num_frames=10, stride=2)[0]) == [15, 17, 19]
    assert read_video(path, start=25)[0].shape == (0, 32, 48, 3)
    with pytest.raises(ConfigError):
        read_video(path, stride=0)


def test_odd_sizes_are_padded_for_subsampled_colour(tmp_path: Path) -> None:
    frames = _numbered_frames(3, height=31, width=45)
    write_video(tmp_path / "odd.mp4", frames, fps=8)
    assert (probe_video(tmp_path / "odd.mp4").height, probe_video(tmp_path / "odd.mp4").width) == (32, 46)
    write_video(tmp_path / "full.mp4", frames, fps=8, pix_fmt="yuv444p")
    assert read_video(tmp_path / "full.mp4")[0].shape == frames.shape


def test_full_resolution_colour_keeps_sharp_colour_edges() -> None:
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    frames[:, :, ::2, 0] = 255  # one-pixel red stripes: 4:2:0 halves colour resolution and smears them
    frames[:, :, 1::2, 2] = 255
    error = {
        pix_fmt: np.abs(
            decode_video_bytes(encode_video_bytes(frames, 8, pix_fmt=pix_fmt))[0].astype(int) - frames
        ).mean()
        for pix_fmt in ("yuv420p", "yuv444p")
    }
    assert error["yuv444p"] < 5 < 20 < error["yuv420p"]


def test_write_is_atomic_and_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="uint8"):
        write_video(tmp_path / "bad.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=8)
    with pytest.raises(ConfigError, match="fps"):
        write_video(tmp_path / "bad.mp4", _numbered_frames(2), fps=0)
    with pytest.raises(ConfigError, match="container"):
        write_video(tmp_path / "bad.nosuchformat", _numbered_frames(2), fps=8)
    # Nothing half-written is left behind, not even the temp files.
    assert list(tmp_path.iterdir()) == []

    write_video(tmp_path / "good.mp4", _numbered_frames(2), fps=8)
    assert [p.name for p in tmp_path.iterdir()] == ["good.mp4"]


def test_gif_export(tmp_path: Path) -> None:
    path = tmp_path / "clip.gif"
    write_gif(path, _numbered_frames(5), fps=10)
    with Image.open(path) as image:
        assert image.n_frames == 5
        assert image.info["duration"] == 100
        assert image.info["loop"] == 0
    assert _frame_indices(read_video(path)[0]) == [0, 1, 2, 3, 4]


def test_in_memory_encode_decode() -> None:
    data = encode_video_bytes(_numbered_frames(4), fps=8)
    frames, fps = decode_video_bytes(data)
    assert _frame_indices(frames) == [0, 1, 2, 3] and fps == pytest.approx(8)
    with pytest.raises(VideoDecodeError):
        decode_video_bytes(b"")


def test_unreadable_files_raise_an_error_naming_them(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    write_video(good, _numbered_frames(10), fps=8)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for name in ("missing.mp4", "empty.mp4", "text.mp4", "truncated.mp4"):
        path = tmp_path / name
        for action in (probe_video, read_video):
            with pytest.raises(VideoDecodeError, match=name) as caught:
                action(path)
            assert isinstance(caught.value, HummingbirdError)
