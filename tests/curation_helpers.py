"""A generator of small video collections with known defects, for the curation tests and benchmark.

Every clip is rendered from a procedural texture seen through a moving virtual camera, so the true
camera motion is known. Degraded copies apply one defect each to a pristine clip (blur, noise,
heavy compression, flicker). Broken files cover the failure modes the probe must survive.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# A camera is a function from time (seconds) to a 2x3 affine matrix mapping output pixels to
# texture pixels, as cv2.warpAffine(..., flags=WARP_INVERSE_MAP) expects.
Camera = Callable[[float], np.ndarray]


# The generated clips are 96x160: the resolution ramp is lowered so that size alone does not drop them.
TEST_CONFIG = {
    "stages": ["quality", "motion"],
    "quality": {"resolution_good": 90, "resolution_bad": 48},
    "engine": {"workers": 1},
}


@dataclass(frozen=True)
class ExpectedOutcome:
    """What the pipeline should conclude for one generated file."""

    keep: bool
    reason: str = ""  # the drop-reason prefix expected in the manifest ("quality", "motion:static", ...)


def natural_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB texture with a roughly 1/f spectrum, sharp edges and some flat regions, like real scenes."""
    image = np.zeros((height, width, 3), np.float32)
    # Octaves of smoothed noise give the 1/f-like background.
    for octave in range(6):
        scale = 2**octave
        small = rng.normal(0.0, 1.0, (max(2, height // scale), max(2, width // scale), 3)).astype(np.float32)
        layer = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        image += layer * (scale**0.9) * 3.0
    image = (image - image.mean()) / (image.std() + 1e-6) * 28.0 + 120.0
    # Solid shapes add crisp edges and flat areas (the regions where noise is easiest to measure).
    for _ in range(max(6, height * width // 2500)):
        color = rng.uniform(30, 230, 3).tolist()
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            radius = int(rng.integers(max(3, min(height, width) // 20), max(6, min(height, width) // 6)))
            cv2.circle(image, center, radius, color, -1, lineType=cv2.LINE_AA)
        else:
            size = rng.integers(max(4, width // 20), max(8, width // 6), 2)
            cv2.rectangle(image, center, (center[0] + int(size[0]), center[1] + int(size[1])), color, -1)
    # Fine detail (grain of real surfaces): small-scale texture that blur and compression remove.
    detail = cv2.GaussianBlur(rng.normal(0.0, 1.0, (height, width)).astype(np.float32), (0, 0), 0.7)
    image += detail[..., None] * 10.0
    return np.clip(image, 0, 255).astype(np.uint8)


def pan_camera(frame_size: tuple[int, int], speed: tuple[float, float], start: tuple[float, float]) -> Camera:
    """Translation at `speed` (texture pixels per second)."""

    def matrix(t: float) -> np.ndarray:
        return np.array([[1.0, 0.0, start[0] + speed[0] * t], [0.0, 1.0, start[1] + speed[1] * t]], np.float32)

    return matrix


def zoom_camera(frame_size: tuple[int, int], center: tuple[float, float], rate: float) -> Camera:
    """An optical zoom: magnification 1 + rate*t around the texture point `center`."""
    height, width = frame_size

    def matrix(t: float) -> np.ndarray:
        inverse_scale = 1.0 / (1.0 + rate * t)
        offset_x = center[0] - inverse_scale * width / 2
        offset_y = center[1] - inverse_scale * height / 2
        return np.array([[inverse_scale, 0.0, offset_x], [0.0, inverse_scale, offset_y]], np.float32)

    return matrix


def render(texture: np.ndarray, camera: Camera, frame_size: tuple[int, int], fps: float, seconds: float) -> np.ndarray:
    height, width = frame_size
    frames = []
    for index in range(round(fps * seconds)):
        matrix = camera(index / fps)
        frames.append(
            cv2.warpAffine(
                texture, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT,
            )
        )
    return np.stack(frames)


def add_subject(frames: np.ndarray, subject: np.ndarray, fps: float, velocity: tuple[float, float]) -> np.ndarray:
    """Paste a round textured subject that moves across the frame at `velocity` (pixels/s)."""
    out = frames.copy()
    size = subject.shape[0]
    mask = np.zeros((size, size), np.float32)
    cv2.circle(mask, (size // 2, size // 2), size // 2 - 1, 1.0, -1, lineType=cv2.LINE_AA)
    height, width = frames.shape[1:3]
    for index in range(len(frames)):
        x = round(width * 0.3 + velocity[0] * index / fps)
        y = round(height * 0.5 - size / 2 + velocity[1] * index / fps)
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + size), min(height, y + size)
        if x1 <= x0 or y1 <= y0:
            continue
        patch = subject[y0 - y : y1 - y, x0 - x : x1 - x].astype(np.float32)
        alpha = mask[y0 - y : y1 - y, x0 - x : x1 - x, None]
        region = out[index, y0:y1, x0:x1].astype(np.float32)
        out[index, y0:y1, x0:x1] = (alpha * patch + (1 - alpha) * region).astype(np.uint8)
    return out


def dolly_zoom(
    background: np.ndarray, subject: np.ndarray, frame_size: tuple[int, int], fps: float, seconds: float, rate: float
) -> np.ndarray:
    """The background zooms by 1 + rate*t about the centre while the centred subject keeps its size."""
    height, width = frame_size
    texture_h, texture_w = background.shape[:2]
    frames = render(background, zoom_camera(frame_size, (texture_w / 2, texture_h / 2), rate), frame_size, fps, seconds)
    size = subject.shape[0]
    mask = np.zeros((size, size), np.float32)
    cv2.circle(mask, (size // 2, size // 2), size // 2 - 1, 1.0, -1, lineType=cv2.LINE_AA)
    y, x = (height - size) // 2, (width - size) // 2
    region = frames[:, y : y + size, x : x + size].astype(np.float32)
    frames[:, y : y + size, x : x + size] = (
        mask[None, ..., None] * subject[None].astype(np.float32) + (1 - mask[None, ..., None]) * region
    ).astype(np.uint8)
    return frames


def blur(frames: np.ndarray, sigma: float = 1.6) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(frame, (0, 0), sigma) for frame in frames])


def add_noise(frames: np.ndarray, rng: np.random.Generator, sigma: float = 14.0) -> np.ndarray:
    noisy = frames.astype(np.float32) + rng.normal(0.0, sigma, frames.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def flicker(frames: np.ndarray, rng: np.random.Generator, amplitude: float = 0.22) -> np.ndarray:
    gains = 1.0 + amplitude * rng.choice([-1.0, 1.0], len(frames)) * rng.uniform(0.6, 1.0, len(frames))
    return np.clip(frames.astype(np.float32) * gains[:, None, None, None], 0, 255).astype(np.uint8)


def write_video(
    path: Path, frames: np.ndarray, fps: float, crf: int = 16, codec: str = "libx264", faststart: bool = False
) -> Path:
    """Encode RGB frames (T, H, W, 3) with PyAV. `faststart` puts the index first, as web videos do."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = (np.sin(2 * math.pi * 440 * np.arange(int(seconds * rate)) / rate) * 0.3).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_defect_collection(
    folder: Path,
    frame_size: tuple[int, int] = (96, 160),
    fps: float = 12.0,
    seconds: float = 2.0,
    seed: int = 0,
    pristine_count: int = 3,
) -> dict[str, ExpectedOutcome]:
    """Write the test collection into `folder`; returns file name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = frame_size
    expected: dict[str, ExpectedOutcome] = {}
    texture_shape = (height * 3, width * 3)

    def textured_subject(size: int) -> np.ndarray:
        return natural_texture(rng, size, size)

    pristine: list[np.ndarray] = []
    for index in range(pristine_count):
        texture = natural_texture(rng, *texture_shape)
        angle = rng.uniform(0, 2 * math.pi)
        speed = (math.cos(angle) * width * 0.35, math.sin(angle) * height * 0.35)
        camera = pan_camera(frame_size, speed, (width, height))
        frames = render(texture, camera, frame_size, fps, seconds)
        frames = add_subject(frames, textured_subject(height // 3), fps, (width * 0.15, 0.0))
        pristine.append(frames)
        name = f"pristine_{index}.mp4"
        write_video(folder / name, frames, fps)
        expected[name] = ExpectedOutcome(keep=True)

    zoom_texture = natural_texture(rng, *texture_shape)
    zoom = render(zoom_texture, zoom_camera(frame_size, (width * 1.5, height * 1.5), 0.35), frame_size, fps, seconds)
    write_video(folder / "camera_zoom.mp4", zoom, fps)
    expected["camera_zoom.mp4"] = ExpectedOutcome(keep=True)

    source = pristine[0]
    write_video(folder / "degraded_blur.mp4", blur(source), fps)
    write_video(folder / "degraded_noise.mp4", add_noise(source, rng), fps)
    write_video(folder / "degraded_compression.mp4", source, fps, crf=51)
    write_video(folder / "degraded_flicker.mp4", flicker(source, rng), fps)
    for name in ("degraded_blur.mp4", "degraded_noise.mp4", "degraded_compression.mp4", "degraded_flicker.mp4"):
        expected[name] = ExpectedOutcome(keep=False, reason="quality")

    dolly_background = natural_texture(rng, *texture_shape)
    dolly = dolly_zoom(dolly_background, textured_subject(height // 2), frame_size, fps, seconds, rate=0.6)
    write_video(folder / "dolly_zoom.mp4", dolly, fps)
    expected["dolly_zoom.mp4"] = ExpectedOutcome(keep=False, reason="motion:dolly_zoom")

    static_frame = render(natural_texture(rng, *texture_shape), pan_camera(frame_size, (0, 0), (width, height)), frame_size, fps, 1 / fps)
    write_video(folder / "static.mp4", np.repeat(static_frame, int(fps * seconds), axis=0), fps)
    expected["static.mp4"] = ExpectedOutcome(keep=False, reason="motion:static")

    # Broken files: every one is recorded with its reason and never stops the run.
    full = write_video(folder / "_full.mp4", source, fps).read_bytes()
    (folder / "_full.mp4").unlink()
    (folder / "truncated.mp4").write_bytes(full[: len(full) // 2])
    expected["truncated.mp4"] = ExpectedOutcome(keep=False, reason="probe")
    faststart = write_video(folder / "_fast.mp4", source, fps, faststart=True).read_bytes()
    (folder / "_fast.mp4").unlink()
    (folder / "truncated_faststart.mp4").write_bytes(faststart[: len(faststart) * 2 // 5])
    expected["truncated_faststart.mp4"] = ExpectedOutcome(keep=False, reason="probe")
    (folder / "zero_length.mp4").write_bytes(b"")
    expected["zero_length.mp4"] = ExpectedOutcome(keep=False, reason="probe")
    write_audio_only(folder / "audio_only.m4a")
    expected["audio_only.m4a"] = ExpectedOutcome(keep=False, reason="probe")
    (folder / "not_a_video.mp4").write_text("this is a text file with a video extension\n")
    expected["not_a_video.mp4"] = ExpectedOutcome(keep=False, reason="probe")
    (folder / "random_bytes.mkv").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    expected["random_bytes.mkv"] = ExpectedOutcome(keep=False, reason="probe")
    return expected


def check_outcomes(manifest, expected: dict[str, ExpectedOutcome]) -> None:
    """Every generated file is in the manifest once, with the expected decision and reason."""
    import pandas as pd

    assert sorted(manifest["clip_id"]) == sorted(expected)
    for row in manifest.itertuples():
        outcome = expected[row.clip_id]
        assert bool(row.keep) == outcome.keep, (row.clip_id, row.drop_reasons)
        if outcome.keep:
            assert row.drop_reasons == "" or pd.isna(row.drop_reasons)
        else:
            assert row.drop_reasons.startswith(outcome.reason), (row.clip_id, row.drop_reasons)
        if outcome.reason == "probe":
            assert row.status == "failed" and row.failure_reason
