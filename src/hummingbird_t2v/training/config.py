"""Training configuration: typed dataclasses read from YAML, with `--set a.b=c` overrides.

A run is described by one `TrainConfig`. The YAML mirrors its nesting; unknown keys are errors
(a typo must not silently train something else). Two fields are free-form mappings because
their schema belongs to something pluggable: a component's `config` (the registered class's
own config dataclass validates it) and `objective` (the objective's settings dataclass does).

Overrides are applied to the raw mapping before it is typed, so `--set optim.lr=3e-4`,
`--set model.unet.config.model_channels=64` and `--set sample.prompts=[a,b]` all work; values
are parsed as YAML scalars or lists.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from hummingbird_t2v.errors import ConfigError

__all__ = [
    "CheckpointConfig",
    "ComponentSpec",
    "ConditioningConfig",
    "DataConfig",
    "EMAConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_yaml",
    "save_config",
]

MixedPrecision = Literal["auto", "no", "fp16", "bf16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass
class ComponentSpec:
    """Where one model component comes from: a model folder, or a registered class built afresh.

    - `path`: a model folder (holding model_index.json; the sub-folder of this component is
      used) or one component folder (config.json + model.safetensors). Weights are loaded.
    - otherwise `class_name` (a class registered in `models.registry`, default per role),
      `preset` (a named config of that class, e.g. U-Net "tiny-vc2", VAE "tiny") and `config`
      (fields that override the preset, or the whole config) build it with random weights.
    """

    path: str | None = None
    class_name: str | None = None
    preset: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    unet: ComponentSpec = field(default_factory=lambda: ComponentSpec(preset="tiny-vc2"))
    vae: ComponentSpec = field(default_factory=lambda: ComponentSpec(preset="tiny"))
    text_encoder: ComponentSpec = field(default_factory=lambda: ComponentSpec(preset="tiny"))
    # Optional caption prior (where sampling starts; `hummingbird train prior` fits one), loaded from a
    # path and carried unchanged into sample videos and the exported model folder. It depends only on
    # the VAE, the text encoder and the data, so a student distilled from a teacher can keep its prior.
    prior: ComponentSpec | None = None
    # Seed of the random initialisation of components built afresh (the same on every rank).
    init_seed: int = 0


@dataclass
class DataConfig:
    """Which clips, cut how, in what batches. `kind`: "videos" reads `source` (a `path,text` CSV,
    a WebVid CSV or a captioned folder, see data.manifest); "toyworld" renders clips in memory."""

    kind: Literal["videos", "toyworld"] = "videos"
    source: str | None = None
    data_root: str | None = None
    # Per process and micro-batch; the effective batch is batch_size x processes x grad_accum.
    batch_size: int = 1
    num_workers: int = 0
    video_length: int = 16
    height: int = 320
    width: int = 512
    frame_stride: int = 1
    random_stride: bool = False
    head_skip: int = 0
    fixed_fps: int | None = None
    # Shuffle seed; every rank derives the same per-epoch permutation from it and takes its shard.
    shuffle_seed: int = 0
    # A clip that fails to decode is replaced by another of the same shard; this many failures
    # in a row mean the data is broken, not one file.
    max_consecutive_failures: int = 50
    # Toy world settings (kind "toyworld"): `size` clips numbered from `start`, plus any
    # ToyWorldConfig field (seed, fps, paraphrase, degraded_fraction, vocabulary: a preset name such
    # as "core" or a mapping of SceneVocabulary fields); its frame
    # size and length come from height/width/video_length above.
    toyworld: dict[str, Any] = field(default_factory=dict)
    # Write the path of every clip each rank trains on to <output>/data/rank-<r>.tsv (audit).
    record_paths: bool = False


@dataclass
class ConditioningConfig:
    """How the frozen VAE and text encoder turn a batch into latents and context."""

    # Draw latents from the VAE posterior, as the official trainers do (False: its mean).
    sample_posterior: bool = True
    # Frames per VAE call (None: all at once); bounds memory on large clips.
    vae_chunk_size: int | None = None


@dataclass
class OptimConfig:
    # "adamw": torch's AdamW; "adamw8bit": bitsandbytes' 8-bit AdamW (the official stage 2's; GPU, needs
    # `pip install bitsandbytes`), which quarters the optimizer state's memory.
    name: Literal["adamw", "adamw8bit"] = "adamw"
    lr: float = 1.0e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1.0e-8
    weight_decay: float = 0.01  # torch's AdamW default, which the official stage-1 code uses
    grad_clip: float | None = 1.0  # max global grad norm; None disables clipping
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    # Cosine schedule: the LR falls to lr x min_lr_ratio at max_steps.
    min_lr_ratio: float = 0.0
    # Module name -> factor on lr for the parameters under it (e.g. {frame_embedding: 10}: a layer added
    # to a trained U-Net learns faster than the weights around it). Names are dotted paths in the
    # trainable module; every name must match at least one trainable parameter.
    lr_multipliers: dict[str, float] = field(default_factory=dict)


@dataclass
class RunConfig:
    max_steps: int = 1000  # optimizer steps
    grad_accum: int = 1
    # auto: bf16 on GPUs that support it, else fp16 on GPUs, fp32 ("no") on the CPU.
    mixed_precision: MixedPrecision = "auto"
    device: DeviceChoice = "auto"
    seed: int = 0
    gradient_checkpointing: bool = False
    # DDP: needed only by objectives that leave some trainable parameters unused in a step.
    find_unused_parameters: bool = False
    # CPU threads per process (None: torch's default). On a shared or small CPU, fewer threads
    # than cores avoid OpenMP oversubscription, which can slow small models down tenfold.
    cpu_threads: int | None = None


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.999
    # Ramp the decay as min(decay, (1 + n) / (10 + n)) so early averages are not dominated by
    # the random initialisation.
    warmup: bool = True


@dataclass
class CheckpointConfig:
    every: int = 500  # steps; 0 saves only at the end
    keep: int = 3  # newest checkpoints kept; 0 keeps all


@dataclass
class LoggingConfig:
    every: int = 10
    # true / false, or auto: on when the tensorboard package is installed.
    tensorboard: bool | Literal["auto"] = "auto"


@dataclass
class SampleConfig:
    """Periodic sample videos (EMA weights) and the defaults written into the exported model."""

    every: int = 0  # steps; 0: only at the end of training
    # An empty list writes no sample videos at all (e.g. a GPU host without PyAV's encoder).
    prompts: list[str] = field(default_factory=lambda: ["a red circle moving left on a blue background"])
    num_frames: int | None = None  # None: data.video_length
    height: int | None = None  # None: data.height
    width: int | None = None  # None: data.width
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    fps: int = 8  # fps condition (and the frame rate the videos are written at)
    seed: int = 0
    prior_strength: float = 1.0  # models with a caption prior (SamplingDefaults.prior_strength)


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    # {"name": <registered objective>, ...that objective's settings}
    objective: dict[str, Any] = field(default_factory=lambda: {"name": "diffusion"})
    data: DataConfig = field(default_factory=DataConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        _validate(self)


def _validate(c: TrainConfig) -> None:
    checks = [
        (c.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (c.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (
            c.data.max_consecutive_failures >= 1,
            "data.max_consecutive_failures must be >= 1",
        ),
        (
            c.data.kind != "videos" or bool(c.data.source),
            "data.source must name a CSV or folder when data.kind is 'videos'",
        ),
        (c.optim.lr > 0, "optim.lr must be > 0"),
        (
            c.optim.grad_clip is None or c.optim.grad_clip > 0,
            "optim.grad_clip must be > 0 or null",
        ),
        (c.optim.warmup_steps >= 0, "optim.warmup_steps must be >= 0"),
        (0.0 <= c.optim.min_lr_ratio <= 1.0, "optim.min_lr_ratio must lie in [0, 1]"),
        (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in c.optim.lr_multipliers.values()),
            f"optim.lr_multipliers maps module names to positive numbers, got {c.optim.lr_multipliers}",
        ),
        (c.run.max_steps >= 1, "run.max_steps must be >= 1"),
        (c.run.grad_accum >= 1, "run.grad_accum must be >= 1"),
        (
            c.run.cpu_threads is None or c.run.cpu_threads >= 1,
            "run.cpu_threads must be >= 1 or null",
        ),
        (0.0 <= c.ema.decay < 1.0, "ema.decay must lie in [0, 1)"),
        (
            c.checkpoint.every >= 0 and c.checkpoint.keep >= 0,
            "checkpoint.every and checkpoint.keep must be >= 0",
        ),
        (c.logging.every >= 1, "logging.every must be >= 1"),
        (c.sample.every >= 0, "sample.every must be >= 0"),
        (c.sample.num_inference_steps >= 1, "sample.num_inference_steps must be >= 1"),
        (
            bool(c.sample.prompts) or c.sample.every == 0,
            "sample.prompts must list at least one prompt when sample.every > 0 (or set sample.every: 0)",
        ),
        (
            isinstance(c.objective.get("name"), str),
            "objective.name must name a registered objective (e.g. diffusion)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# ------------------------------------------------------------------------------- dict <-> dataclass


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Type and validate a raw mapping (from YAML); unknown keys and wrong types are ConfigErrors."""
    return build_dataclass(TrainConfig, data, "")


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain (YAML/JSON-safe) nested dict of a config dataclass; tuples become lists."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_dataclass(cls: type, data: Any, where: str = "") -> Any:
    """Instantiate dataclass `cls` from a raw mapping, converting and checking every field;
    `where` names the mapping's place in the config for error messages."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {[_join(where, k) for k in unknown]}; valid keys here: {sorted(known)}"
        )
    values = {name: _convert(hints[name], value, _join(where, name)) for name, value in data.items()}
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where} must not be null")
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} entries, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept it as the number it obviously is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {hint!r}")  # a bug in this module, not user input


# ------------------------------------------------------------------------------- files and overrides


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` assignments to a nested mapping (in place; returns it)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set expects KEY=VALUE with a dotted key (e.g. optim.lr=1e-4), got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {key}: cannot parse the value {text!r} ({error})") from None
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file with --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None: all defaults), apply `--set` overrides, type and validate it."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides))


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (it is how a run is reproduced and exported)."""
    from hummingbird_t2v.training.checkpointing import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(config), sort_keys=False))
