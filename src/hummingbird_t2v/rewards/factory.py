"""`build_reward_model(name, weights_path, **options)`: one entry point for configs and the CLI.

Names (aliases in brackets):

    hpsv2.1  [hpsv2, hps, image_text]   HPSv2Reward, weights: HPS_v2.1_compressed.pt
    clip                                 CLIPImageTextReward, weights: a transformers CLIP folder
    viclip   [vi_clip, video_text]       ViCLIPReward, weights: ViClip-InternVid-10M-FLT.pth
    toy                                  ToyAttributeReward around the toy evaluator
    toy_motion                           ToyMotionReward: the foreground's travel, read off the pixels

Weights are never downloaded. Leaving `weights_path` out is an error, except with
``random_weights=True`` (hpsv2.1, viclip: random weights in the real or a tiny structure, for
tests and smoke runs), for ``toy`` (the shipped toy evaluator, or ``classifier=``) and for
``toy_motion`` (no weights).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.rewards.base import DEFAULT_TEXT_CACHE_SIZE, RewardModel
from hummingbird_t2v.rewards.clip_reward import CLIPImageTextReward
from hummingbird_t2v.rewards.hpsv2 import HPS_FILE_NAME, HPSv2Config, HPSv2Reward
from hummingbird_t2v.rewards.motion import DEFAULT_MAX_TRAVEL, ToyMotionReward
from hummingbird_t2v.rewards.preprocess import ImagePreprocess
from hummingbird_t2v.rewards.toy import (
    DEFAULT_TOY_NUM_FRAMES,
    PromptParser,
    ScoreMode,
    ToyAttributeReward,
)
from hummingbird_t2v.rewards.viclip import VICLIP_FILE_NAME, ViCLIPReward

WeightsPath = str | Path | None
_TOY_EVALUATOR_MODULE = "hummingbird_t2v.toyworld.evaluator"
_TOY_EVALUATOR_LOADER = "load_reward_classifier"


def _hpsv2(
    weights_path: WeightsPath,
    *,
    config: HPSv2Config | None = None,
    dtype: torch.dtype = torch.float32,
    random_weights: bool = False,
    preset: str = "tiny",
    seed: int = 0,
) -> RewardModel:
    if weights_path is not None:
        return HPSv2Reward.from_checkpoint(weights_path, config, dtype)
    if random_weights:
        return HPSv2Reward.random(preset, config, seed, dtype)
    raise CheckpointError(
        f"the HPSv2.1 reward needs its weights: pass the path of {HPS_FILE_NAME} (see docs/rewards.md)"
    )


def _clip(
    weights_path: WeightsPath,
    *,
    preprocess: ImagePreprocess | None = None,
    dtype: torch.dtype = torch.float32,
    text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
) -> RewardModel:
    if weights_path is None:
        raise CheckpointError("the CLIP reward needs a local transformers CLIP folder as weights_path")
    return CLIPImageTextReward.from_pretrained(
        weights_path, preprocess=preprocess, dtype=dtype, text_cache_size=text_cache_size
    )


def _viclip(
    weights_path: WeightsPath,
    *,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    preprocess: ImagePreprocess | None = None,
    dtype: torch.dtype = torch.float32,
    text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
    random_weights: bool = False,
    preset: str = "tiny",
    seed: int = 0,
) -> RewardModel:
    if weights_path is not None:
        return ViCLIPReward.from_checkpoint(
            weights_path,
            vision_heads=vision_heads,
            text_heads=text_heads,
            preprocess=preprocess,
            dtype=dtype,
            text_cache_size=text_cache_size,
        )
    if random_weights:
        return ViCLIPReward.random(preset, seed, dtype)
    raise CheckpointError(
        f"the ViCLIP reward needs its weights: pass the path of {VICLIP_FILE_NAME} (see docs/rewards.md)"
    )


def _toy(
    weights_path: WeightsPath,
    *,
    classifier: nn.Module | None = None,
    attributes: Sequence[str] | None = None,
    num_frames: int | None = None,
    mode: ScoreMode = "log_prob",
    parser: PromptParser | None = None,
) -> RewardModel:
    if classifier is None:
        classifier = _load_toy_evaluator(weights_path)
    elif weights_path is not None:
        raise ConfigError("pass either classifier= or weights_path for the toy reward, not both")
    return ToyAttributeReward(classifier, attributes, parser=parser, num_frames=num_frames, mode=mode)


def _toy_motion(
    weights_path: WeightsPath,
    *,
    num_frames: int = DEFAULT_TOY_NUM_FRAMES,
    max_travel: float = DEFAULT_MAX_TRAVEL,
    parser: PromptParser | None = None,
) -> RewardModel:
    if weights_path is not None:
        raise ConfigError("the toy_motion reward has no weights (it reads motion off the pixels); leave weights out")
    return ToyMotionReward(parser=parser, num_frames=num_frames, max_travel=max_travel)


def _load_toy_evaluator(weights_path: WeightsPath) -> nn.Module:
    # The evaluator lives in the toy world (a higher layer), so it is looked up by name here.
    if importlib.util.find_spec(_TOY_EVALUATOR_MODULE) is None:
        raise ConfigError(f"the toy evaluator ({_TOY_EVALUATOR_MODULE}) is not available; pass classifier=")
    loader = getattr(importlib.import_module(_TOY_EVALUATOR_MODULE), _TOY_EVALUATOR_LOADER, None)
    if loader is None:
        raise ConfigError(f"{_TOY_EVALUATOR_MODULE} has no {_TOY_EVALUATOR_LOADER}(); pass classifier=")
    return loader(weights_path)


_BUILDERS: dict[str, Callable[..., RewardModel]] = {
    "hpsv2.1": _hpsv2,
    "clip": _clip,
    "viclip": _viclip,
    "toy": _toy,
    "toy_motion": _toy_motion,
}
_ALIASES = {
    "hpsv2": "hpsv2.1",
    "hps": "hpsv2.1",
    "image_text": "hpsv2.1",
    "vi_clip": "viclip",
    "video_text": "viclip",
}
REWARD_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_reward_model(kind_or_name: str, weights_path: WeightsPath = None, **options: Any) -> RewardModel:
    """Build a frozen reward model by name or kind (see the module docstring for names and options)."""
    key = str(kind_or_name).strip().lower()
    name = _ALIASES.get(key, key)
    if name not in _BUILDERS:
        raise ConfigError(
            f"unknown reward model {kind_or_name!r}; choose one of {sorted(REWARD_NAMES)} "
            f"(or an alias: {sorted(_ALIASES)})"
        )
    builder = _BUILDERS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p != "weights_path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"reward {name!r} does not take options {unknown}; it takes {accepted}")
    return builder(weights_path, **options)
