"""Damage a clip in a known way, so quality filters and evaluators have ground truth.

Each degradation takes uint8 frames (T, H, W, 3), a strength in [0, 1] and a generator, and
returns new frames of the same shape. Strength maps to a physical amount that is stated per kind,
scaled with the frame size where it is a length in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hummingbird_t2v.data.video_io import decode_video_bytes, encode_video_bytes
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.toyworld.vocabulary import DEGRADATIONS

__all__ = ["Degradation", "apply_degradation"]


@dataclass(frozen=True)
class Degradation:
    kind: str = "none"  # "none" or one of vocabulary.DEGRADATIONS
    strength: float = 0.0  # 0..1


def _gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    image = frames.astype(np.float32)
    for axis in (1, 2):  # separable: rows, then columns, with edge padding
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        size = image.shape[axis]
        image = sum(
            weight * np.take(padded, np.arange(offset, offset + size), axis=axis) for offset, weight in enumerate(taps)
        )
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def _drop_frames(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a share of frames (never the first) by the last frame shown: a stuttering clip."""
    count = len(frames)
    dropped = rng.random(count) < 0.2 + 0.3 * strength
    dropped[0] = False
    if count > 1 and not dropped.any():
        dropped[int(rng.integers(1, count))] = True
    shown = np.maximum.accumulate(np.where(dropped, 0, np.arange(count)))
    return frames[shown]


def _flicker(frames: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale the brightness of random frames up or down by 15-50 %."""
    amount = 0.15 + 0.35 * strength
    gains = 1.0 + amount * rng.choice([-1.0, 0.0, 1.0], size=len(frames))
    return np.clip(frames.astype(np.float32) * gains[:, None, None, None] + 0.5, 0, 255).astype(np.uint8)


def apply_degradation(
    frames: np.ndarray, degradation: Degradation, rng: np.random.Generator, fps: float = 8.0
) -> np.ndarray:
    """Return a degraded copy of `frames` (the input is not modified).

    blur: Gaussian, sigma = (0.8 + 2.2 s) px at 64 px, scaled with the short side.
    noise: additive Gaussian, sigma = 8 + 32 s grey levels.
    compression: an H.264 round trip at CRF 38 + 13 s (51 is x264's worst).
    frame_drop: 20-50 % of frames repeat the previous one.
    flicker: random frames 15-50 % darker or brighter.
    """
    kind, strength = degradation.kind, float(degradation.strength)
    if kind == "none":
        return frames.copy()
    if kind not in DEGRADATIONS:
        raise ConfigError(f"unknown degradation {kind!r}; choose from none, {', '.join(DEGRADATIONS)}")
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"degradation strength must lie in [0, 1], got {strength}")
    if kind == "blur":
        return _gaussian_blur(frames, (0.8 + 2.2 * strength) * min(frames.shape[1:3]) / 64)
    if kind == "noise":
        noise = rng.normal(0.0, 8 + 32 * strength, size=frames.shape)
        return np.clip(frames + noise + 0.5, 0, 255).astype(np.uint8)
    if kind == "compression":
        encoded = encode_video_bytes(frames, fps, crf=round(38 + 13 * strength))
        decoded, _ = decode_video_bytes(encoded, label="compression round trip")
        return decoded[:, : frames.shape[1], : frames.shape[2]]  # drop any even-size padding
    if kind == "frame_drop":
        return _drop_frames(frames, strength, rng)
    return _flicker(frames, strength, rng)
