"""The per-clip measurement stage: a pure function from an input record to a flat record of facts.

The same function runs in-process, in a local process pool and in Ray Data workers. Records are
flat (scalars and strings only) with a fixed set of keys, so that they fit Arrow tables, Parquet
and CSV without conversion. A clip that cannot be analysed is a record with status "failed" and
its reason; nothing here raises for a bad file.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from hummingbird_t2v.curation.config import CurateConfig
from hummingbird_t2v.curation.motion import MotionSettings, analyse_motion
from hummingbird_t2v.curation.probe import DecodePlan, ProbeFailure, decode_for_analysis
from hummingbird_t2v.curation.quality import QualityRamps, Ramp, technical_quality
from hummingbird_t2v.errors import HummingbirdError

# Every measured record has exactly these keys (besides the input record's own), in this order.
MEASUREMENT_DEFAULTS: dict[str, Any] = {
    "status": "failed",
    "failure_reason": None,
    "failure_detail": None,
    "file_bytes": None,
    "duration_s": None,
    "fps": None,
    "width": None,
    "height": None,
    "codec": None,
    "pix_fmt": None,
    "frame_count": None,
    "bit_rate": None,
    "has_audio": None,
    "container": None,
    "quality_score": None,
    "quality_detail": None,
    "quality_noise": None,
    "quality_blockiness": None,
    "quality_mean_luma": None,
    "quality_clipped": None,
    "quality_flicker": None,
    "quality_explanation": None,
    "dover_technical": None,
    "dover_aesthetic": None,
    "dover_overall": None,
    "motion_magnitude": None,
    "camera_pan": None,
    "camera_tilt": None,
    "camera_zoom": None,
    "camera_rotation": None,
    "camera_motion": None,
    "is_static": None,
    "dolly_zoom_fraction": None,
    "is_dolly_zoom": None,
    "motion_smoothness": None,
    "motion_explanation": None,
    "measure_seconds": None,
}


def _decode_plan(config: CurateConfig) -> DecodePlan:
    probe = config.probe
    return DecodePlan(
        sample_fps=probe.sample_fps,
        analysis_short_side=probe.analysis_short_side,
        max_seconds=probe.max_seconds,
        quality_frames=probe.quality_frames,
        quality_crop=probe.quality_crop,
        min_frames=probe.min_frames,
    )


def _motion_settings(config: CurateConfig) -> MotionSettings:
    motion = config.motion
    return MotionSettings(
        static_max=motion.static_max,
        camera_min=motion.camera_min,
        dolly_border_zoom_min=motion.dolly_border_zoom_min,
        dolly_centre_ratio_max=motion.dolly_centre_ratio_max,
        dolly_pair_fraction=motion.dolly_pair_fraction,
    )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def measure_clip(record: dict[str, Any], config: CurateConfig) -> dict[str, Any]:
    """Probe, decode and measure one clip; returns the record with MEASUREMENT_DEFAULTS' keys filled."""
    started = time.perf_counter()
    result = dict(record)
    result.update(MEASUREMENT_DEFAULTS)
    path = record["path"]
    try:
        result["file_bytes"] = os.path.getsize(path)
    except OSError:
        pass
    try:
        clip = decode_for_analysis(path, _decode_plan(config))
    except ProbeFailure as failure:
        result.update(failure_reason=failure.reason, failure_detail=failure.detail)
        result["measure_seconds"] = time.perf_counter() - started
        return result

    info = clip.info
    result.update(
        duration_s=info.duration_s or clip.decoded_seconds,
        fps=info.fps,
        width=info.width,
        height=info.height,
        codec=info.codec,
        pix_fmt=info.pix_fmt,
        frame_count=info.frame_count,
        bit_rate=info.bit_rate,
        has_audio=info.has_audio,
        container=info.container,
    )
    try:
        if "quality" in config.stages:
            ramps = QualityRamps(resolution=Ramp(good=config.quality.resolution_good, bad=config.quality.resolution_bad))
            quality = technical_quality(clip.quality_luma, clip.luma_means, min(info.width, info.height), ramps)
            measures = quality.measures
            result.update(
                quality_score=quality.score,
                quality_detail=measures["detail"],
                quality_noise=measures["noise"],
                quality_blockiness=measures["blockiness"],
                quality_mean_luma=measures["mean_luma"],
                quality_clipped=measures["clipped"],
                quality_flicker=measures["flicker"],
                quality_explanation=quality.explanation(),
            )
            if config.quality.dover.weights:
                from hummingbird_t2v.curation.dover import cached_scorer  # torch is only needed here

                scores = cached_scorer(config.quality.dover).score_file(path)
                result.update(
                    dover_technical=scores.technical, dover_aesthetic=scores.aesthetic, dover_overall=scores.overall
                )
        if "motion" in config.stages:
            motion = analyse_motion(clip.frames, clip.times, _motion_settings(config))
            result.update(
                motion_magnitude=motion.magnitude,
                camera_pan=motion.pan,
                camera_tilt=motion.tilt,
                camera_zoom=motion.zoom,
                camera_rotation=motion.rotation,
                camera_motion=motion.camera_motion,
                is_static=motion.is_static,
                dolly_zoom_fraction=motion.dolly_zoom_fraction,
                is_dolly_zoom=motion.is_dolly_zoom,
                motion_smoothness=_finite(motion.smoothness),
                motion_explanation=motion.explanation,
            )
    except HummingbirdError:
        raise  # a configuration problem (e.g. unusable DOVER weights) stops the run, it is not a clip defect
    except Exception as error:  # noqa: BLE001 - one odd clip must not stop a million-clip run
        result.update(failure_reason="analysis_error", failure_detail=f"{type(error).__name__}: {error}")
        result["measure_seconds"] = time.perf_counter() - started
        return result
    result["status"] = "ok"
    result["measure_seconds"] = time.perf_counter() - started
    return result
