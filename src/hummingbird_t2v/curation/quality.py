"""Built-in technical quality: a weight-free score from measurable signals of the decoded frames.

Each signal is measured, then mapped by a linear ramp to a factor in [0, 1] (1 = no visible
problem, 0 = clearly degraded); the score is the product of the factors, so one bad signal is
enough to sink a clip and the weakest factor names the reason. The ramps were calibrated on
synthetic clips (see docs/curation.md): every degraded copy must score below its source.

Signals (all on 8-bit luma at native resolution unless noted):
- detail: energy of the finest Laplacian-pyramid band over the next coarser band, median over
  textured 16x16 patches. Natural sharp content sits near 1 (a 1/f spectrum has equal energy per
  octave); blur, upscaling and heavy compression remove the finest band first.
- noise: Immerkaer's fast noise estimate per 16x16 patch, 10th percentile over patches (flat
  patches dominate the low percentiles, so texture does not read as noise).
- blockiness: mean absolute step across 8- and 16-pixel block boundaries over the mean step
  elsewhere (1.0 = no block grid).
- exposure: mean luma and the fraction of clipped pixels.
- flicker: median absolute deviation of each frame's mean luma from the average of its two
  neighbours, in percent of the mean luma, over every decoded frame (not just the sampled ones).
- resolution: the short side of the stored frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_PATCH = 16
_IMMERKAER_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


@dataclass(frozen=True)
class Ramp:
    """Maps a measurement to [0, 1]: 1 at `good`, 0 at `bad`, linear between (either order)."""

    good: float
    bad: float

    def __call__(self, value: float) -> float:
        if self.good == self.bad:
            return 1.0 if value >= self.good else 0.0
        return float(np.clip((value - self.bad) / (self.good - self.bad), 0.0, 1.0))


@dataclass(frozen=True)
class QualityRamps:
    """Calibration of the technical score; every field is one signal's good/bad points."""

    detail: Ramp = Ramp(good=0.55, bad=0.30)
    noise: Ramp = Ramp(good=3.0, bad=7.0)  # grey levels (sigma)
    blockiness: Ramp = Ramp(good=1.15, bad=1.60)
    dark: Ramp = Ramp(good=50.0, bad=20.0)  # mean luma
    bright: Ramp = Ramp(good=205.0, bad=235.0)  # mean luma
    clipped: Ramp = Ramp(good=0.25, bad=0.60)  # fraction of pixels at <=3 or >=252
    flicker: Ramp = Ramp(good=1.5, bad=5.0)  # percent of mean luma
    resolution: Ramp = Ramp(good=240.0, bad=144.0)  # short side, pixels


@dataclass(frozen=True)
class QualityResult:
    score: float
    measures: dict[str, float]
    factors: dict[str, float]

    @property
    def weakest(self) -> str:
        return min(self.factors, key=self.factors.__getitem__)

    def explanation(self) -> str:
        weak = [f"{name} {value:.2f}" for name, value in sorted(self.factors.items(), key=lambda item: item[1]) if value < 0.99]
        return "weak: " + ", ".join(weak) if weak else "no weak signal"


def _patch_mean(values: np.ndarray) -> np.ndarray:
    rows, cols = values.shape[0] // _PATCH, values.shape[1] // _PATCH
    return values[: rows * _PATCH, : cols * _PATCH].reshape(rows, _PATCH, cols, _PATCH).mean(axis=(1, 3))


def noise_sigma(luma: np.ndarray) -> float:
    """Noise standard deviation in grey levels (Immerkaer 1996, per patch, low percentile)."""
    response = np.abs(cv2.filter2D(luma.astype(np.float32), -1, _IMMERKAER_KERNEL, borderType=cv2.BORDER_REFLECT))
    per_patch = _patch_mean(response[1:-1, 1:-1]) * np.sqrt(np.pi / 2) / 6
    return float(np.percentile(per_patch, 10)) if per_patch.size else 0.0


def detail_ratio(luma: np.ndarray, active_energy: float = 4.0) -> float:
    """Finest-band over next-band Laplacian energy, median over textured patches (NaN if none)."""
    image = luma.astype(np.float32)
    height, width = image.shape
    down1 = cv2.pyrDown(image)
    band0 = image - cv2.pyrUp(down1, dstsize=(width, height))
    down2 = cv2.pyrDown(down1)
    band1 = down1 - cv2.pyrUp(down2, dstsize=(down1.shape[1], down1.shape[0]))
    grid = (max(1, width // _PATCH), max(1, height // _PATCH))
    energy0 = cv2.resize(band0**2, grid, interpolation=cv2.INTER_AREA)
    energy1 = cv2.resize(band1**2, grid, interpolation=cv2.INTER_AREA)
    textured = energy1 > active_energy
    if not textured.any():
        return float("nan")
    return float(np.median(energy0[textured] / energy1[textured]))


def _grid_step_ratio(luma: np.ndarray, period: int, axis: int) -> float:
    steps = np.abs(np.diff(luma.astype(np.float32), axis=axis)).mean(axis=1 - axis)
    on_boundary = (np.arange(steps.size) % period) == period - 1
    if not on_boundary.any() or on_boundary.all():
        return 1.0
    return float(steps[on_boundary].mean() / (steps[~on_boundary].mean() + 1e-3))


def blockiness(luma: np.ndarray) -> float:
    """Step across codec block boundaries relative to elsewhere; the worse of 8 and 16 pixel grids."""
    ratios = []
    for period in (8, 16):
        horizontal = _grid_step_ratio(luma, period, axis=1) if luma.shape[1] >= 2 * period else 1.0
        vertical = _grid_step_ratio(luma, period, axis=0) if luma.shape[0] >= 2 * period else 1.0
        ratios.append((horizontal + vertical) / 2)
    return max(ratios)


def flicker_percent(luma_means: np.ndarray) -> float:
    """Frame-to-frame brightness instability, in percent of the mean luma.

    Each frame's mean luma is compared with the average of its two neighbours, which cancels slow
    fades and camera exposure drifts; the median over frames ignores the two spikes of a scene cut.
    """
    if luma_means.size < 3:
        return 0.0
    values = luma_means.astype(np.float64)
    deviation = np.abs(values[1:-1] - 0.5 * (values[:-2] + values[2:]))
    return 100.0 * float(np.median(deviation)) / max(float(values.mean()), 20.0)


def technical_quality(
    quality_luma: Sequence[np.ndarray],
    luma_means: np.ndarray,
    short_side: int,
    ramps: QualityRamps = QualityRamps(),
) -> QualityResult:
    """Score in [0, 1] from native-resolution luma frames and the per-frame mean luma series."""
    usable = [frame for frame in quality_luma if min(frame.shape) >= 2 * _PATCH]
    if usable:
        details = [detail_ratio(frame) for frame in usable]
        detail = float(np.nanmedian(details)) if not np.all(np.isnan(details)) else 0.0
        noise = float(np.median([noise_sigma(frame) for frame in usable]))
        block = float(np.median([blockiness(frame) for frame in usable]))
        stacked = np.concatenate([frame[::2, ::2].ravel() for frame in usable])
        mean_luma = float(stacked.mean())
        clipped = float(np.mean((stacked <= 3) | (stacked >= 252)))
    else:  # frames too small to measure: only exposure and resolution can judge them
        detail, noise, block = ramps.detail.good, 0.0, 1.0
        mean_luma = float(luma_means.mean()) if luma_means.size else 0.0
        clipped = 0.0
    flicker = flicker_percent(luma_means)
    measures = {
        "detail": detail,
        "noise": noise,
        "blockiness": block,
        "mean_luma": mean_luma,
        "clipped": clipped,
        "flicker": flicker,
        "short_side": float(short_side),
    }
    factors = {
        "detail": ramps.detail(detail),
        "noise": ramps.noise(noise),
        "blockiness": ramps.blockiness(block),
        "exposure": min(ramps.dark(mean_luma), ramps.bright(mean_luma), ramps.clipped(clipped)),
        "flicker": ramps.flicker(flicker),
        "resolution": ramps.resolution(float(short_side)),
    }
    score = float(np.prod(list(factors.values())))
    return QualityResult(score=score, measures=measures, factors=factors)
