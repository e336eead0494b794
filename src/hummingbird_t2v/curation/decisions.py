"""Keep/drop decisions from stored measurements.

Decisions are a separate, cheap pass over the whole collection because percentile thresholds need
every clip's score. Re-running it with new thresholds needs no re-measurement (`--resume` on a
finished run re-decides with the current config).

Every drop reason starts with its stage ("probe:", "quality:", "motion:") followed by the detector
and the numbers behind the decision; several reasons are joined with " | ".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hummingbird_t2v.curation.config import CurateConfig, Threshold
from hummingbird_t2v.curation.probe import FAILURE_REASONS


@dataclass(frozen=True)
class ResolvedThreshold:
    """A threshold turned into a number for this collection, with how it was obtained."""

    cutoff: float
    label: str  # "0.5" or "p10=0.43"


def resolve(threshold: Threshold | None, scores: Sequence[float | None]) -> ResolvedThreshold | None:
    if threshold is None:
        return None
    if not threshold.percentile:
        return ResolvedThreshold(threshold.value, f"{threshold.value:g}")
    values = np.asarray([s for s in scores if s is not None and np.isfinite(s)], np.float64)
    if values.size == 0:
        return None
    cutoff = float(np.percentile(values, threshold.value))
    return ResolvedThreshold(cutoff, f"p{threshold.value:g}={cutoff:.4g}")


def decide(records: list[dict[str, Any]], config: CurateConfig) -> list[dict[str, Any]]:
    """Add `keep` (bool) and `drop_reasons` (str, empty when kept) to every record."""
    ok = [r for r in records if r.get("status") == "ok"]

    def column(name: str) -> list[float | None]:
        return [r.get(name) for r in ok]

    checks: list[tuple[str, str, ResolvedThreshold]] = []  # (column, reason prefix, threshold)
    if "quality" in config.stages:
        candidates = [
            ("quality_score", "quality:technical", config.quality.min_technical),
            ("dover_overall", "quality:dover_overall", config.quality.dover.min_overall),
            ("dover_technical", "quality:dover_technical", config.quality.dover.min_technical),
            ("dover_aesthetic", "quality:dover_aesthetic", config.quality.dover.min_aesthetic),
        ]
        for name, prefix, threshold in candidates:
            resolved = resolve(threshold, column(name))
            if resolved is not None:
                checks.append((name, prefix, resolved))
    if "motion" in config.stages:
        resolved = resolve(config.motion.min_smoothness, column("motion_smoothness"))
        if resolved is not None:
            checks.append(("motion_smoothness", "motion:smoothness", resolved))

    decided = []
    for record in records:
        reasons: list[str] = []
        if record.get("status") != "ok":
            reason = record.get("failure_reason") or "unknown"
            explanation = "; ".join(filter(None, [FAILURE_REASONS.get(reason, "analysis failed"), record.get("failure_detail")]))
            reasons.append(f"probe:{reason} ({explanation})")
        else:
            duration = record.get("duration_s") or 0.0
            if duration < config.probe.min_duration_s:
                reasons.append(f"probe:too_short (duration {duration:.2f}s < {config.probe.min_duration_s:g}s)")
            for name, prefix, threshold in checks:
                value = record.get(name)
                if value is None:
                    continue
                if value < threshold.cutoff:
                    detail = f"{value:.4g} < {threshold.label}"
                    if name == "quality_score" and record.get("quality_explanation"):
                        detail += f"; {record['quality_explanation']}"
                    reasons.append(f"{prefix} ({detail})")
            if "motion" in config.stages:
                explanation = record.get("motion_explanation") or ""
                if config.motion.drop_static and record.get("is_static"):
                    reasons.append(f"motion:static ({explanation.split(';')[0]})")
                if config.motion.drop_dolly_zoom and record.get("is_dolly_zoom"):
                    dolly = [part.strip() for part in explanation.split(";") if "dolly" in part]
                    reasons.append(f"motion:dolly_zoom ({dolly[0] if dolly else explanation})")
        decided.append({**record, "keep": not reasons, "drop_reasons": " | ".join(reasons)})
    return decided
