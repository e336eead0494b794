"""Typed configuration of a curation run, loaded from YAML (configs/curation.yaml documents every key)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hummingbird_t2v.errors import ConfigError

STAGES = ("quality", "motion", "recaption")


@dataclass(frozen=True)
class Threshold:
    """A lower bound on a score: absolute (`0.5`) or a percentile of the collection (`"p10"`).

    A percentile threshold drops the clips below that percentile of the scores measured in this
    run, so "p10" drops roughly the worst 10 %.
    """

    value: float
    percentile: bool = False

    @classmethod
    def parse(cls, raw: Any, key: str) -> Threshold | None:
        if raw is None or raw is False:
            return None
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected a number, 'pNN' or null, got {raw!r}")
        if isinstance(raw, (int, float)):
            return cls(float(raw))
        text = str(raw).strip().lower()
        try:
            if text.startswith("p"):
                percent = float(text[1:])
            elif text.endswith("%"):
                percent = float(text[:-1])
            else:
                return cls(float(text))
        except ValueError:
            raise ConfigError(f"{key}: {raw!r} is neither a number nor a percentile like 'p10'") from None
        if not 0.0 < percent < 100.0:
            raise ConfigError(f"{key}: percentile {percent:g} must be between 0 and 100 (exclusive)")
        return cls(percent, percentile=True)

    def __str__(self) -> str:
        return f"p{self.value:g}" if self.percentile else f"{self.value:g}"


@dataclass(frozen=True)
class ProbeConfig:
    sample_fps: float = 8.0
    analysis_short_side: int = 128
    max_seconds: float = 10.0
    quality_frames: int = 6
    quality_crop: int = 512
    min_frames: int = 4
    min_duration_s: float = 0.0  # clips shorter than this are dropped (reason: probe)


@dataclass(frozen=True)
class DoverConfig:
    weights: str | None = None  # path to DOVER.pth (or .safetensors); the DOVER scorer runs only when set
    device: str = "cpu"
    min_overall: Threshold | None = None  # on DOVER's 0-100 overall score
    min_technical: Threshold | None = None
    min_aesthetic: Threshold | None = None
    seed: int = 0  # DOVER samples frames and fragment offsets randomly; seeded for reproducible scores


@dataclass(frozen=True)
class QualityConfig:
    min_technical: Threshold | None = Threshold(0.5)  # built-in technical score in [0, 1]
    resolution_good: float = 240.0  # short side (pixels) at which the resolution factor is 1
    resolution_bad: float = 144.0  # short side at which it is 0
    dover: DoverConfig = field(default_factory=DoverConfig)


@dataclass(frozen=True)
class MotionConfig:
    static_max: float = 0.02
    camera_min: float = 0.04
    dolly_border_zoom_min: float = 0.12
    dolly_centre_ratio_max: float = 0.35
    dolly_pair_fraction: float = 0.5
    drop_static: bool = True
    drop_dolly_zoom: bool = True
    min_smoothness: Threshold | None = None  # flow-interpolation smoothness in [0, 1]


@dataclass(frozen=True)
class RecaptionConfig:
    backend: str = "openai"  # "openai" (any OpenAI-compatible server) or "transformers" (a local model)
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from YAML
    model_path: str | None = None  # transformers backend: a model folder or a .gguf file
    device: str = "cpu"
    timeout_s: float = 60.0
    max_retries: int = 3
    backoff_s: float = 1.0
    concurrency: int = 8  # requests in flight at once (the server batches them)
    temperature: float = 0.2
    max_tokens: int = 120
    max_words: int = 60
    template: str | None = None  # path to a prompt template file; None uses the built-in one
    only_kept: bool = True  # re-caption only clips that passed the filters


@dataclass(frozen=True)
class EngineConfig:
    kind: str = "local"  # "local" (process pool) or "ray" (Ray Data)
    workers: int = 0  # local: processes (0 = one per CPU core, 1 = in this process)
    ray_address: str | None = None  # None: start a local Ray; "auto": join the running cluster
    ray_num_cpus: int | None = None  # local Ray only
    ray_object_store_mb: int = 512  # local Ray only: bounded object store
    window: int = 2000  # clips submitted per Ray dataset / in flight at most locally (bounds memory)


@dataclass(frozen=True)
class CurateConfig:
    stages: tuple[str, ...] = STAGES
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    recaption: RecaptionConfig = field(default_factory=RecaptionConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def measurement_fingerprint(self) -> str:
        """Hash of the settings that change per-clip measurements (not thresholds or engines).

        A resumed run must measure the remaining clips the same way as the finished ones; thresholds
        may change freely because decisions are re-made from the stored measurements.
        """
        payload = {
            "stages": [s for s in self.stages if s != "recaption"],
            "probe": dataclasses.asdict(self.probe),
            "resolution": [self.quality.resolution_good, self.quality.resolution_bad],
            "dover": [self.quality.dover.weights, self.quality.dover.seed],
            "motion": [self.motion.static_max, self.motion.camera_min, self.motion.dolly_border_zoom_min,
                       self.motion.dolly_centre_ratio_max, self.motion.dolly_pair_fraction],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


_THRESHOLD_FIELDS = {"min_technical", "min_overall", "min_aesthetic", "min_smoothness"}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; valid: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = prefix + name
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default) and not isinstance(default, Threshold):
            values[name] = _build(type(default), value, key + ".")
        elif name in _THRESHOLD_FIELDS:
            values[name] = Threshold.parse(value, key)
        elif name == "stages":
            values[name] = parse_stages(value)
        else:
            values[name] = _coerce(value, default, key)
    return cls(**values)


def _coerce(value: Any, default: Any, key: str) -> Any:
    if value is None:
        return None
    expected = type(default) if default is not None else None
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if expected in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if expected is int and float(value) != int(value):
            raise ConfigError(f"{key}: expected a whole number, got {value!r}")
        return expected(value)
    if expected is str or expected is None:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a single value, got {value!r}")
        return str(value) if not isinstance(value, (int, float)) or expected is str else value
    return value


def parse_stages(raw: Any) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    stages = tuple(str(item).strip() for item in items if str(item).strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    return tuple(s for s in STAGES if s in stages)


def _validate(config: CurateConfig) -> CurateConfig:
    if config.engine.kind not in ("local", "ray"):
        raise ConfigError(f"engine.kind: {config.engine.kind!r} is not 'local' or 'ray'")
    if config.recaption.backend not in ("openai", "transformers"):
        raise ConfigError(f"recaption.backend: {config.recaption.backend!r} is not 'openai' or 'transformers'")
    if config.probe.sample_fps <= 0 or config.probe.analysis_short_side < 16:
        raise ConfigError("probe.sample_fps must be > 0 and probe.analysis_short_side >= 16")
    if config.probe.min_frames < 2:
        raise ConfigError("probe.min_frames must be at least 2 (motion needs a frame pair)")
    if config.engine.workers < 0 or config.engine.window < 1:
        raise ConfigError("engine.workers must be >= 0 and engine.window >= 1")
    if config.recaption.concurrency < 1 or config.recaption.max_retries < 0:
        raise ConfigError("recaption.concurrency must be >= 1 and recaption.max_retries >= 0")
    return config


def config_from_dict(raw: dict[str, Any] | None) -> CurateConfig:
    return _validate(_build(CurateConfig, raw or {}, ""))


def load_config(path: str | os.PathLike[str] | None) -> CurateConfig:
    """Read a YAML config; missing keys take their defaults, unknown keys are an error."""
    if path is None:
        return CurateConfig()
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file} is not valid YAML: {error}") from None
    return config_from_dict(raw)


def config_to_dict(config: CurateConfig) -> dict[str, Any]:
    """A JSON/YAML-ready view (thresholds as 0.5 or 'p10'), the inverse of config_from_dict."""

    def convert(value: Any) -> Any:
        if isinstance(value, Threshold):
            return str(value) if value.percentile else value.value
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return list(value)
        return value

    return convert(config)


def with_overrides(config: CurateConfig, **sections: dict[str, Any]) -> CurateConfig:
    """Return `config` with some fields of its sections replaced (CLI flags use this)."""
    merged = config_to_dict(config)
    for section, values in sections.items():
        if section == "stages":
            merged["stages"] = values
            continue
        target = merged[section]
        for key, value in values.items():
            node = target
            parts = key.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
    return config_from_dict(merged)
