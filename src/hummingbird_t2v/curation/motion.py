"""Motion analysis with OpenCV optical flow (no weights): amount, camera motion, dolly zoom, smoothness.

Coordinates are normalised so that results do not depend on resolution or frame rate: positions are
measured from the frame centre in units of the half-diagonal, and rates are per second. Per frame
pair a similarity model is fitted to the flow:

    u = tx + z * x - r * y,    v = ty + r * x + z * y

where (tx, ty) is pan/tilt, z is the zoom rate (relative scale change) and r the rotation rate
(radians). The fit is robust (iteratively re-fitted on the best 60 % of points) so that a moving
subject does not pass for camera motion.

A dolly zoom (the "vertigo" shot) shows as a strong zoom of the border region (background) while the
centre region (the subject) keeps its size: the two regions are fitted separately and compared.

Smoothness follows VBench's motion_smoothness idea (interpolate each middle frame from its
neighbours and score (255 - MAE) / 255) with flow-based warping instead of the AMT-S network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

_KEEP_FRACTION = 0.6  # share of points kept by the robust fit (the rest are outliers: moving objects)


@dataclass(frozen=True)
class MotionSettings:
    """Decision points of the motion detectors (see docs/curation.md for their meaning)."""

    static_max: float = 0.02  # 90th-percentile flow speed (half-diagonals/s) below which a clip is static
    camera_min: float = 0.04  # pan/tilt (half-diagonals/s), zoom (1/s) or rotation (rad/s) that counts as camera motion
    dolly_border_zoom_min: float = 0.12  # |zoom rate| of the background (1/s) that a dolly zoom needs
    dolly_centre_ratio_max: float = 0.35  # the subject's zoom stays below this share of the background's
    dolly_pair_fraction: float = 0.5  # share of frame pairs that must show it
    centre_box: float = 0.4  # centre region: this fraction of width and height
    border_margin: float = 0.2  # border ring: this fraction of width/height from each edge


@dataclass(frozen=True)
class CameraFit:
    pan: float
    tilt: float
    zoom: float
    rotation: float
    residual: float


@dataclass
class MotionResult:
    magnitude: float  # 90th-percentile flow speed, half-diagonals per second (median over pairs)
    pan: float
    tilt: float
    zoom: float
    rotation: float
    camera_motion: str  # a short phrase for captions: "static camera", "pans left", ...
    is_static: bool
    dolly_zoom_fraction: float  # share of pairs with dolly-zoom evidence
    is_dolly_zoom: bool
    smoothness: float  # (255 - MAE) / 255 of flow-interpolated middle frames; NaN without triplets
    explanation: str
    per_pair: list[dict[str, float]] = field(default_factory=list)


def _flow(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(
        previous, current, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.1, flags=0
    )


def _grid(height: int, width: int, step: int) -> tuple[np.ndarray, np.ndarray, float]:
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    half_diagonal = 0.5 * float(np.hypot(width, height))
    return xs.astype(np.float32), ys.astype(np.float32), half_diagonal


def fit_similarity(x: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> CameraFit:
    """Robust least-squares fit of (tx, ty, z, r) to flow (u, v) at centred, normalised points (x, y)."""
    count = x.size
    if count < 4:
        return CameraFit(0.0, 0.0, 0.0, 0.0, 0.0)
    ones, zeros = np.ones(count), np.zeros(count)
    design = np.concatenate(
        [np.stack([ones, zeros, x, -y], axis=1), np.stack([zeros, ones, y, x], axis=1)], axis=0
    )
    target = np.concatenate([u, v])
    keep = np.ones(count, bool)
    params = np.zeros(4)
    for _ in range(3):
        rows = np.concatenate([keep, keep])
        params, *_ = np.linalg.lstsq(design[rows], target[rows], rcond=None)
        error = np.hypot(*(design @ params - target).reshape(2, count))
        keep = error <= np.quantile(error, _KEEP_FRACTION)
    residual = float(np.median(np.hypot(*(design @ params - target).reshape(2, count))))
    return CameraFit(float(params[0]), float(params[1]), float(params[2]), float(params[3]), residual)


def _describe(pan: float, tilt: float, zoom: float, rotation: float, static: bool, threshold: float) -> str:
    if static:
        return "static shot"
    parts = []
    if abs(zoom) >= threshold:
        parts.append("zooms in" if zoom > 0 else "zooms out")
    if abs(pan) >= threshold:
        parts.append("pans right" if pan < 0 else "pans left")
    if abs(tilt) >= threshold:
        parts.append("tilts down" if tilt < 0 else "tilts up")
    if abs(rotation) >= threshold:
        parts.append("rotates clockwise" if rotation < 0 else "rotates counter-clockwise")
    return "camera " + " and ".join(parts) if parts else "static camera, moving subject"


def _warp(image: np.ndarray, flow_x: np.ndarray, flow_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, flow_x, flow_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolation_smoothness(first: np.ndarray, middle: np.ndarray, last: np.ndarray) -> float:
    """(255 - MAE) / 255 between `middle` and its flow-based interpolation from `first` and `last`."""
    height, width = first.shape
    flow = _flow(first, last)  # first -> last
    base_x, base_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    # The middle frame sees first's content moved half-way: sample first half a step back along the
    # flow and last half a step forward (the flow field is assumed locally smooth).
    from_first = _warp(first, base_x - 0.5 * flow[..., 0], base_y - 0.5 * flow[..., 1])
    from_last = _warp(last, base_x + 0.5 * flow[..., 0], base_y + 0.5 * flow[..., 1])
    estimate = 0.5 * (from_first.astype(np.float32) + from_last.astype(np.float32))
    mae = float(np.mean(np.abs(estimate - middle.astype(np.float32))))
    return (255.0 - mae) / 255.0


def analyse_motion(frames: np.ndarray, times: np.ndarray, settings: MotionSettings = MotionSettings()) -> MotionResult:
    """Analyse RGB frames (T, H, W, 3) sampled at `times` (seconds)."""
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    height, width = gray[0].shape
    step = max(2, min(height, width) // 24)
    xs, ys, half_diagonal = _grid(height, width, step)
    x_norm = (xs - width / 2) / half_diagonal
    y_norm = (ys - height / 2) / half_diagonal
    centre = (np.abs(xs - width / 2) <= settings.centre_box * width / 2) & (
        np.abs(ys - height / 2) <= settings.centre_box * height / 2
    )
    border = (
        (xs < settings.border_margin * width)
        | (xs > (1 - settings.border_margin) * width)
        | (ys < settings.border_margin * height)
        | (ys > (1 - settings.border_margin) * height)
    )
    per_pair: list[dict[str, float]] = []
    for index in range(1, len(gray)):
        dt = float(times[index] - times[index - 1])
        if dt <= 0:
            continue
        flow = _flow(gray[index - 1], gray[index])
        u = flow[ys.astype(int), xs.astype(int), 0] / half_diagonal / dt
        v = flow[ys.astype(int), xs.astype(int), 1] / half_diagonal / dt
        speed = np.hypot(u, v)
        whole = fit_similarity(x_norm.ravel(), y_norm.ravel(), u.ravel(), v.ravel())
        inner = fit_similarity(x_norm[centre], y_norm[centre], u[centre], v[centre])
        outer = fit_similarity(x_norm[border], y_norm[border], u[border], v[border])
        per_pair.append(
            {
                "speed_p90": float(np.percentile(speed, 90)),
                "pan": whole.pan,
                "tilt": whole.tilt,
                "zoom": whole.zoom,
                "rotation": whole.rotation,
                "zoom_centre": inner.zoom,
                "zoom_border": outer.zoom,
            }
        )
    if not per_pair:
        raise ValueError("motion analysis needs at least two frames with increasing timestamps")

    def median(key: str) -> float:
        return float(np.median([pair[key] for pair in per_pair]))

    magnitude = median("speed_p90")
    pan, tilt, zoom, rotation = median("pan"), median("tilt"), median("zoom"), median("rotation")
    is_static = magnitude < settings.static_max

    # Dolly-zoom evidence per pair: the background zooms strongly, the subject does not follow
    # (or zooms the other way). A plain zoom moves both regions alike and is not flagged.
    evidence = []
    for pair in per_pair:
        border_zoom, centre_zoom = pair["zoom_border"], pair["zoom_centre"]
        strong = abs(border_zoom) >= settings.dolly_border_zoom_min
        subject_steady = abs(centre_zoom) <= settings.dolly_centre_ratio_max * abs(border_zoom)
        opposite = np.sign(centre_zoom) != np.sign(border_zoom) and abs(centre_zoom) > 0
        evidence.append(bool(strong and (subject_steady or opposite)))
    signs = {np.sign(pair["zoom_border"]) for pair, hit in zip(per_pair, evidence) if hit}
    dolly_fraction = float(np.mean(evidence))
    is_dolly = dolly_fraction >= settings.dolly_pair_fraction and len(signs) == 1

    smoothness_scores = [
        interpolation_smoothness(gray[index - 1], gray[index], gray[index + 1]) for index in range(1, len(gray) - 1, 2)
    ]
    smoothness = float(np.mean(smoothness_scores)) if smoothness_scores else float("nan")

    camera_motion = _describe(pan, tilt, zoom, rotation, is_static, settings.camera_min)
    zoom_border, zoom_centre = median("zoom_border"), median("zoom_centre")
    explanation = (
        f"speed p90 {magnitude:.3f}/s (static below {settings.static_max:g}); "
        f"camera pan {pan:+.3f} tilt {tilt:+.3f} zoom {zoom:+.3f} rot {rotation:+.3f}; "
        f"zoom border {zoom_border:+.3f} centre {zoom_centre:+.3f}, dolly evidence in {dolly_fraction:.0%} of pairs; "
        f"smoothness {smoothness:.4f}"
    )
    return MotionResult(
        magnitude=magnitude,
        pan=pan,
        tilt=tilt,
        zoom=zoom,
        rotation=rotation,
        camera_motion=camera_motion,
        is_static=is_static,
        dolly_zoom_fraction=dolly_fraction,
        is_dolly_zoom=is_dolly,
        smoothness=smoothness,
        explanation=explanation,
        per_pair=per_pair,
    )
