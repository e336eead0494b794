"""How a pipeline samples: the `model_index.json` of a model folder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from hummingbird_t2v.errors import ConfigError

SamplerName = Literal["consistency", "ddim"]


@dataclass(frozen=True)
class SamplingDefaults:
    """Call defaults; the official values differ between the distilled students and the teacher."""

    num_inference_steps: int
    guidance_scale: float
    fps: int
    num_frames: int = 16
    height: int = 320
    width: int = 512
    # Models with a caption prior: how far the starting noise moves towards the caption's mean clip
    # (1 matches the training marginal; a few-step student may read its cue better from more).
    prior_strength: float = 1.0


# Students: 4-step consistency sampling, guidance distilled into the w-embedding (7.5), fps 8.
STUDENT_DEFAULTS = SamplingDefaults(num_inference_steps=4, guidance_scale=7.5, fps=8)
# VideoCrafter2 teacher: DDIM-50 with classifier-free guidance 12 at fps 28 (architecture.md (f)).
TEACHER_DEFAULTS = SamplingDefaults(num_inference_steps=50, guidance_scale=12.0, fps=28)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline needs besides the component weights."""

    sampler: SamplerName
    defaults: SamplingDefaults
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # Consistency sampler: the origin grid the student was distilled on, and the share of each step's
    # noise drawn fresh (1: LCM, as released; 0: deterministic; diffusion/consistency.py).
    origin_steps: int = 50
    consistency_gamma: float = 1.0
    # DDIM teacher: eta and VideoCrafter2's latent-scale schedule (architecture.md (f)).
    ddim_eta: float = 1.0
    use_scale: bool = True
    scale_b: float = 0.7
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_sampler(cls, sampler: SamplerName, **overrides: Any) -> PipelineConfig:
        defaults = STUDENT_DEFAULTS if sampler == "consistency" else TEACHER_DEFAULTS
        return cls(sampler=sampler, defaults=defaults, **overrides)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["_class_name"] = "HummingbirdPipeline"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        data = {k: v for k, v in data.items() if not k.startswith("_") and k != "components"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"model_index.json has unknown fields {unknown}; it was written by a newer version or edited by hand")
        if data.get("sampler") not in ("consistency", "ddim"):
            raise ConfigError(f"model_index.json: sampler must be 'consistency' or 'ddim', got {data.get('sampler')!r}")
        defaults = SamplingDefaults(**data.pop("defaults"))
        return cls(defaults=defaults, **data)
