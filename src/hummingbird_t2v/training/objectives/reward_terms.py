"""Reward terms: reward models in a training loss, shared by every objective that takes `rewards:`.

A term scores decoded frames of a one-step clean-latent prediction (stage 2's f_θ, or the base
objective's x̂₀ at high noise) with a frozen reward model and adds −weight·mean(score) to the
loss. Frame selection follows the official stage-2 trainer (training spec §2.3): 5 random frames
for image-text rewards, 8 strided frames for video-text rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from hummingbird_t2v.errors import ConfigError

__all__ = [
    "DEFAULT_REWARD_FRAMES",
    "RewardFeedback",
    "RewardSpec",
    "RewardTerm",
    "build_reward_terms",
    "decode_reward_frames",
    "reward_feedback_loss",
    "select_reward_frames",
]

RewardKind = Literal["image_text", "video_text"]
# Frames each reward kind scores by default (spec §2.3: reward_batch_size 5, video_rm_batch_size 8).
DEFAULT_REWARD_FRAMES: dict[str, int] = {"image_text": 5, "video_text": 8}


class RewardModel(Protocol):
    """What a reward term needs (implemented in hummingbird_t2v.rewards)."""

    kind: str  # "image_text" or "video_text"

    def score(self, frames: Tensor, prompts: list[str]) -> Tensor:
        """frames (b, T, 3, H, W) in [0, 1], differentiable -> (b,) scores, higher is better."""
        ...


@dataclass
class RewardTerm:
    """One reward in the loss: −weight·mean(model.score(frames of f_θ, prompts))."""

    model: RewardModel
    weight: float
    # Frames decoded and scored per clip; None: the model's own `num_frames` if it has one, else
    # 5 for image-text and 8 for video-text (the official reward_batch_size / video_rm_batch_size).
    num_frames: int | None = None
    name: str | None = None  # the log name (reward_<name>); default: the model's kind

    def __post_init__(self) -> None:
        kind = getattr(self.model, "kind", None)
        if kind not in DEFAULT_REWARD_FRAMES:
            raise ConfigError(f"a reward model's kind must be 'image_text' or 'video_text', got {kind!r}")
        if not callable(getattr(self.model, "score", None)):
            raise ConfigError(f"reward model {type(self.model).__name__} has no score(frames, prompts) method")
        if self.num_frames is None:
            self.num_frames = getattr(self.model, "num_frames", None) or DEFAULT_REWARD_FRAMES[kind]
        if self.num_frames < 1:
            raise ConfigError(f"a reward term needs at least one frame, got num_frames={self.num_frames}")
        if self.name is None:
            self.name = kind


def select_reward_frames(
    kind: RewardKind, total_frames: int, num_frames: int, generator: torch.Generator | None = None
) -> Tensor:
    """Frame indices (num_frames,) int64 a reward scores, drawn as the official trainer draws them.

    image_text: uniform with replacement. video_text: stride s = T // n, a random offset o in
    [0, s), frames o, o+s, … (n of them); needs T >= n.
    """
    device = generator.device if generator is not None else "cpu"
    if kind == "image_text":
        return torch.randint(0, total_frames, (num_frames,), generator=generator, device=device)
    if kind == "video_text":
        stride = total_frames // num_frames
        if stride < 1:
            raise ConfigError(
                f"a video-text reward on {num_frames} strided frames needs clips of at least {num_frames} "
                f"frames, got {total_frames}; train on longer clips or lower the term's num_frames"
            )
        offset = torch.randint(0, stride, (1,), generator=generator, device=device)
        return offset + stride * torch.arange(num_frames, device=device)
    raise ConfigError(f"unknown reward kind {kind!r}; expected 'image_text' or 'video_text'")


@dataclass(frozen=True)
class RewardSpec:
    """One entry of `objective.rewards`: a reward model (rewards.build_reward_model) and its weight."""

    name: str = ""  # hpsv2.1, clip, viclip, toy (or an alias)
    weights: str | None = None  # the file or folder users bring; null for toy or options.random_weights
    weight: float = 1.0
    num_frames: int | None = None  # null: 5 random frames (image-text), the model's / 8 strided (video-text)
    # The builder's keyword options; `dtype` is a name (float32, bfloat16, float16) and `preprocess` a
    # mapping of rewards.preprocess.ImagePreprocess fields.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every entry of objective.rewards needs a name: hpsv2.1, clip, viclip or toy")


_REWARD_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_reward_terms(specs: Sequence[RewardSpec]) -> list[RewardTerm]:
    """Reward models from the config's entries (imported lazily: they pull in transformers)."""
    from hummingbird_t2v.rewards.factory import build_reward_model
    from hummingbird_t2v.rewards.preprocess import ImagePreprocess

    terms: list[RewardTerm] = []
    for i, spec in enumerate(specs):
        options = dict(spec.options)
        if isinstance(options.get("dtype"), str):
            if options["dtype"] not in _REWARD_DTYPES:
                raise ConfigError(f"objective.rewards[{i}].options.dtype must be one of {sorted(_REWARD_DTYPES)}")
            options["dtype"] = _REWARD_DTYPES[options["dtype"]]
        if isinstance(options.get("preprocess"), dict):
            options["preprocess"] = ImagePreprocess(**options["preprocess"])
        model = build_reward_model(spec.name, spec.weights, **options)
        # Log names: the reward's name, numbered when the same reward appears twice.
        name = spec.name.strip().lower()
        taken = {term.name for term in terms}
        if name in taken:
            name = next(f"{name}_{n}" for n in range(2, len(specs) + 2) if f"{name}_{n}" not in taken)
        terms.append(RewardTerm(model, spec.weight, spec.num_frames, name=name))
    return terms


def decode_reward_frames(vae: nn.Module, latents: Tensor) -> Tensor:
    """Latents (b, c, T, h, w) decoded to the frames reward models score: (b, T, 3, H, W) in [0, 1]."""
    frames = vae.decode(latents)  # (b, 3, T, H, W) in about [-1, 1]
    return (frames.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)


def reward_feedback_loss(
    terms: Sequence[RewardTerm],
    vae: nn.Module,
    f_theta: Tensor,
    prompts: Sequence[str],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Σ −weight·mean(score) over the reward terms, and each term's mean score to log.

    Frames of ``f_theta``, a one-step prediction of the clean latents (b, c, T, h, w), are decoded
    by the frozen ``vae`` with gradients, so the reward gradient reaches the trainable weights that
    made ``f_theta`` through the decoder.
    """
    if len(prompts) != f_theta.shape[0]:
        raise ConfigError(
            f"reward terms need one caption per clip, got {len(prompts)} for {f_theta.shape[0]} clips"
        )
    total = f_theta.new_zeros(())
    logs: dict[str, Tensor] = {}
    for term in terms:
        index = select_reward_frames(term.model.kind, f_theta.shape[2], term.num_frames, generator)
        frames = decode_reward_frames(vae, f_theta[:, :, index.to(f_theta.device)])
        score = term.model.score(frames, list(prompts))
        total = total - term.weight * score.float().mean()
        logs[f"reward_{term.name}"] = score.detach().float().mean()
    return total, logs


class RewardFeedback(nn.Module):
    """The reward part of an objective: its terms and the frozen VAE that decodes for them.

    Neither the VAE nor the reward networks are ever trained (gradients still flow through them to
    the trainable model), and they stay in eval mode whatever mode the objective is put in. As a
    submodule they move with the objective between devices.
    """

    def __init__(self, terms: Sequence[RewardTerm], vae: nn.Module | None) -> None:
        super().__init__()
        if vae is None:
            raise ConfigError("reward terms score decoded frames: pass the frozen VAE (vae=...)")
        self.terms = list(terms)
        self.vae = vae.requires_grad_(False).eval()
        self.models = nn.ModuleList(
            [t.model.requires_grad_(False).eval() for t in self.terms if isinstance(t.model, nn.Module)]
        )

    def train(self, mode: bool = True) -> RewardFeedback:
        return super().train(False)

    def forward(
        self, f_theta: Tensor, prompts: Sequence[str], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`reward_feedback_loss` of these terms on the one-step prediction ``f_theta``."""
        return reward_feedback_loss(self.terms, self.vae, f_theta, prompts, generator)
