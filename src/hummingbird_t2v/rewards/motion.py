"""Toy-world motion reward: does the clip's object travel the way the prompt says, read off the pixels.

No learned weights: the reward tracks the foreground's centroid and measures its straight-line
travel. Per clip:

1. the background is each pixel's median over the frames (no gradient): a moving object covers a
   pixel in fewer than half of them, so the median is the scene without it;
2. each frame's foreground weight is its absolute difference from that background, summed over
   RGB and normalised to sum to 1 per frame;
3. the centroid (x, y) of that weight, in coordinates where the frame's short side spans [-1, 1]
   (the toy world's own units: x right, y down);
4. the travel D = (T − 1)·slope of a least-squares line through the centroids over frames;
5. score = min(D·u, max_travel) − |D × u| for the prompt's unit direction u: progress the asked
   way, capped at the world's longest path so that exaggerating does not pay, minus drift across.

Prompts without a straight-line motion (still, rotating, bouncing, camera moves only, or two
objects) score 0 and give no gradient. It is independent of the toy evaluator, so a model trained
with it can still be judged by the evaluator. It reads single-object scenes on a still camera, the
core toy vocabulary; a camera pan moves the background too, which this reading does not separate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.rewards.base import RewardInputError, RewardModel, check_frames
from hummingbird_t2v.rewards.toy import (
    DEFAULT_TOY_NUM_FRAMES,
    PromptParser,
    ToyPromptParser,
)

# The toy world's longest straight path (scene.py draws travel from U[0.6, 1.0] in these units).
DEFAULT_MAX_TRAVEL = 1.0
# Keeps an empty frame (identical to the background) from dividing by zero; far below any object.
_WEIGHT_EPS = 1e-6


def _toy_directions() -> dict[str, tuple[float, float]]:
    # Imported here: the vocabulary is plain data of the toy world, a layer above the rewards.
    from hummingbird_t2v.toyworld.vocabulary import MOTION_DIRECTIONS

    return dict(MOTION_DIRECTIONS)


def foreground_centroids(frames: torch.Tensor) -> torch.Tensor:
    """(b, T, 3, H, W) frames -> (b, T, 2) centroid (x, y) of each frame's difference from the
    clip's per-pixel median, in units where the short side spans [-1, 1]."""
    background = frames.median(dim=1, keepdim=True).values.detach()
    weight = (frames - background).abs().sum(dim=2)  # (b, T, H, W)
    weight = weight / (weight.sum(dim=(-2, -1), keepdim=True) + _WEIGHT_EPS)
    height, width = frames.shape[-2:]
    half_short = min(height, width) / 2
    xs = (torch.arange(width, device=frames.device, dtype=frames.dtype) + 0.5 - width / 2) / half_short
    ys = (torch.arange(height, device=frames.device, dtype=frames.dtype) + 0.5 - height / 2) / half_short
    cx = (weight.sum(dim=-2) * xs).sum(dim=-1)
    cy = (weight.sum(dim=-1) * ys).sum(dim=-1)
    return torch.stack([cx, cy], dim=-1)


def straight_line_travel(centroids: torch.Tensor) -> torch.Tensor:
    """(b, T, 2) centroids -> (b, 2) displacement from first to last frame of their least-squares line."""
    frames = centroids.shape[1]
    if frames < 2:
        raise RewardInputError(f"measuring travel needs at least 2 frames per clip, got {frames}")
    index = torch.arange(frames, device=centroids.device, dtype=centroids.dtype)
    centred = index - index.mean()
    slope = (centred[None, :, None] * centroids).sum(dim=1) / centred.pow(2).sum()
    return slope * (frames - 1)


class ToyMotionReward(RewardModel):
    """Signed travel of the foreground along the prompt's direction (see the module docstring)."""

    def __init__(
        self,
        *,
        parser: PromptParser | None = None,
        num_frames: int = DEFAULT_TOY_NUM_FRAMES,
        max_travel: float = DEFAULT_MAX_TRAVEL,
    ) -> None:
        if not max_travel > 0:
            raise ConfigError(f"max_travel must be > 0 (the toy world's paths are at most 1.0), got {max_travel}")
        if num_frames < 2:
            raise ConfigError(f"the motion reward needs at least 2 frames per clip, got num_frames={num_frames}")
        super().__init__("video_text", num_frames)
        self.parser: PromptParser = parser or ToyPromptParser()
        self.max_travel = float(max_travel)
        self._directions = _toy_directions()
        self.freeze()

    def directions(self, prompts: Sequence[str]) -> torch.Tensor:
        """(b, 2) unit direction each prompt asks for; (0, 0) where it asks for no straight-line motion
        (or names two objects, whose motions one centroid cannot tell apart)."""
        rows = []
        for prompt in prompts:
            parsed = self.parser(prompt)
            single = parsed.get("num_objects", "1") == "1"
            rows.append(self._directions.get(parsed.get("motion", ""), (0.0, 0.0)) if single else (0.0, 0.0))
        return torch.tensor(rows, dtype=torch.float32)

    def score(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_frames(frames, prompts)
        travel = straight_line_travel(foreground_centroids(frames.float()))
        direction = self.directions(prompts).to(travel.device)
        along = (travel * direction).sum(dim=-1)
        across = (travel[:, 0] * direction[:, 1] - travel[:, 1] * direction[:, 0]).abs()
        score = along.clamp(max=self.max_travel) - across
        asked = direction.abs().sum(dim=-1) > 0
        return torch.where(asked, score, torch.zeros_like(score))
