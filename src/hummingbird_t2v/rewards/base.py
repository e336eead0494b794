"""The reward-model interface the stage-2 objective codes against, plus what every reward shares.

A reward model turns decoded frames and their prompts into one number per video:

    reward.kind        "image_text" (scores frames one by one) or "video_text" (scores the clip)
    reward.num_frames  frames a video reward wants (e.g. 8); None for image-text rewards
    reward.score(frames, prompts) -> (b,)
        frames: (b, T, 3, H, W) float in [0, 1], any H and W; the model resizes, crops and
        normalises by itself, differentiably. Image-text rewards return the mean over the T
        frames; video-text rewards score the clip as a whole.

Gradients flow back to `frames` (that is how reward feedback reaches the student through the VAE
decoder); the reward's own weights are frozen and it always stays in eval mode, even when a parent
module calls `.train()`. Text features do not depend on the frames, so they are computed under
`no_grad` and cached per prompt.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError

RewardKind = Literal["image_text", "video_text"]
REWARD_KINDS: tuple[str, ...] = ("image_text", "video_text")
DEFAULT_TEXT_CACHE_SIZE = 4096


class RewardInputError(ConfigError):
    """Frames or prompts handed to a reward model do not have the documented form."""


class TextFeatureCache:
    """Least-recently-used map prompt -> feature row, so a prompt is encoded once, not every step.

    Bounded because stage-2 training sees millions of distinct captions; `capacity=0` disables it.
    """

    def __init__(self, capacity: int = DEFAULT_TEXT_CACHE_SIZE) -> None:
        if capacity < 0:
            raise ConfigError(f"text cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._rows: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()

    def lookup(self, prompts: Sequence[str], encode: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """Rows for `prompts` (in order); `encode` is called once, on the prompts not cached yet."""
        fresh: dict[str, torch.Tensor] = {}
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            with torch.no_grad():
                features = encode(missing).detach()
            fresh = dict(zip(missing, features.unbind(0), strict=True))
        rows = []
        for prompt in prompts:
            row = fresh.get(prompt)
            if row is None:
                row = self._rows[prompt]
                self._rows.move_to_end(prompt)
            rows.append(row)
        for prompt, row in fresh.items():
            if self.capacity:
                self._rows[prompt] = row
        while len(self._rows) > self.capacity:
            self._rows.popitem(last=False)
        return torch.stack(rows)


def check_frames(frames: torch.Tensor, prompts: Sequence[str]) -> None:
    """Raise `RewardInputError` unless frames are (b, T, 3, H, W) floats with one prompt per video."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5 or frames.shape[2] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise RewardInputError(f"frames must be a (batch, frames, 3, height, width) tensor in [0, 1], got {shape}")
    if not frames.is_floating_point():
        raise RewardInputError(f"frames must be floating point in [0, 1], got {frames.dtype}; divide uint8 by 255")
    if frames.shape[1] < 1 or frames.shape[3] < 1 or frames.shape[4] < 1:
        raise RewardInputError(f"frames must not be empty, got shape {tuple(frames.shape)}")
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise RewardInputError("prompts must be a list of strings, one per video")
    if len(prompts) != frames.shape[0]:
        raise RewardInputError(f"got {len(prompts)} prompts for {frames.shape[0]} videos; pass one prompt per video")


class RewardModel(nn.Module, ABC):
    """Base class of every reward: frozen, always in eval mode, `forward` is `score`."""

    kind: RewardKind
    num_frames: int | None

    def __init__(self, kind: RewardKind, num_frames: int | None) -> None:
        super().__init__()
        if kind not in REWARD_KINDS:
            raise ConfigError(f"reward kind must be one of {REWARD_KINDS}, got {kind!r}")
        if kind == "image_text" and num_frames is not None:
            raise ConfigError("image-text rewards score single frames; their num_frames must be None")
        if kind == "video_text" and (num_frames is None or num_frames < 1):
            raise ConfigError(f"a video-text reward needs num_frames >= 1, got {num_frames}")
        self.kind = kind
        self.num_frames = num_frames

    @abstractmethod
    def score(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """(b, T, 3, H, W) frames in [0, 1] and b prompts -> (b,) float32 rewards, differentiable in frames."""

    def forward(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.score(frames, prompts)

    def freeze(self) -> RewardModel:
        """Stop gradients into the weights and switch dropout-like layers off, for good."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> RewardModel:
        # A trainer calling .train() on a module tree that holds the reward must not switch the
        # reward's layers into training behaviour: it is a fixed judge, never trained here.
        del mode
        return super().train(False)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # nn.Module's signature
        # .to()/.half()/.cuda() change the device or dtype the text features must live in.
        cache = getattr(self, "text_cache", None)
        if isinstance(cache, TextFeatureCache):
            cache.clear()
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32
