"""HPSv2.1 (Human Preference Score v2.1) image-text reward, without open_clip.

HPSv2.1 is an open_clip ViT-H-14 CLIP fine-tuned on human preferences; its weights file
``HPS_v2.1_compressed.pt`` holds the open_clip state dict (bare names or nested under
``"state_dict"``): ``visual.*`` (ViT-H/14: width 1280, 32 blocks, 16 heads of 80, patch 14,
224 px, exact-erf GELU), the text tower (width 1024, 24 blocks, 16 heads, context 77),
``text_projection``, ``logit_scale``. `convert.py` maps it onto a transformers `CLIPModel`.

Score as T2V-Turbo (and Hummingbird's stage 2) computes it: per frame, the cosine of the L2-
normalised image and text features; the text side under `no_grad`. Preprocessing is the tail
of HPSv2's evaluation transform applied to decoded frames: longer side to 224 (bicubic), black
letterbox padding to 224 x 224, OpenAI CLIP mean/std (`preprocess.letterbox`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.tokenizer import OpenCLIPTokenizer
from hummingbird_t2v.rewards.base import DEFAULT_TEXT_CACHE_SIZE
from hummingbird_t2v.rewards.clip_reward import CLIPImageTextReward
from hummingbird_t2v.rewards.convert import clip_text_config, convert_open_clip_model
from hummingbird_t2v.rewards.loading import build_uninitialised, load_into_uninitialised, read_reward_weights
from hummingbird_t2v.rewards.preprocess import ImagePreprocess

HPS_FILE_NAME = "HPS_v2.1_compressed.pt"


@dataclass(frozen=True)
class HPSv2Config:
    """What the checkpoint's shapes do not say, and how frames are prepared."""

    vision_heads: int | None = None  # None: 16 for ViT-H/14 (width 1280); required for other widths
    text_heads: int | None = None  # None: one head per 64 channels (16 for width 1024)
    activation: str = "gelu"  # ViT-H-14 uses exact GELU, not OpenAI's QuickGELU
    preprocess: ImagePreprocess | None = None  # None: HPS letterbox to the model's input size (224)
    text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE


# Random-weight architectures for smoke tests and the structural training test: the real
# ViT-H-14 shape, and a tiny one with the same structure.
_RANDOM_PRESETS: dict[str, dict[str, Any]] = {
    "vit-h-14": {
        "vision": {
            "hidden_size": 1280,
            "intermediate_size": 5120,
            "num_hidden_layers": 32,
            "num_attention_heads": 16,
            "image_size": 224,
            "patch_size": 14,
        },
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16},
        "projection_dim": 1024,
    },
    "tiny": {
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 28,
            "patch_size": 14,
        },
        "text": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
        "projection_dim": 16,
    },
}


class HPSv2Reward(CLIPImageTextReward):
    """HPSv2.1: a CLIP image-text reward with open_clip weights, letterboxed frames."""

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: HPSv2Config | None = None, dtype: torch.dtype = torch.float32
    ) -> HPSv2Reward:
        """Load ``HPS_v2.1_compressed.pt`` (or any open_clip ViT CLIP state dict file)."""
        return cls.from_open_clip_state_dict(read_reward_weights(path), config, dtype)

    @classmethod
    def from_open_clip_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        config: HPSv2Config | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> HPSv2Reward:
        config = config or HPSv2Config()
        clip_config, converted = convert_open_clip_model(
            state_dict, vision_heads=config.vision_heads, text_heads=config.text_heads, activation=config.activation
        )
        clip = load_into_uninitialised(build_uninitialised(lambda: CLIPModel(clip_config)), converted, "HPSv2", dtype)
        return cls._assemble(clip, config)

    @classmethod
    def random(
        cls, preset: str = "tiny", config: HPSv2Config | None = None, seed: int = 0, dtype: torch.dtype = torch.float32
    ) -> HPSv2Reward:
        """Random weights in the HPSv2 structure ("vit-h-14" or "tiny"): for tests and smoke runs only."""
        if preset not in _RANDOM_PRESETS:
            raise ConfigError(f"unknown HPSv2 preset {preset!r}; choose one of {sorted(_RANDOM_PRESETS)}")
        shape = _RANDOM_PRESETS[preset]
        common = {"hidden_act": (config or HPSv2Config()).activation, "layer_norm_eps": 1e-5}
        clip_config = CLIPConfig(
            vision_config={**shape["vision"], **common},
            text_config=clip_text_config(**shape["text"], **common, max_position_embeddings=77).to_dict(),
            projection_dim=shape["projection_dim"],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clip = CLIPModel(clip_config)
        return cls._assemble(clip.to(dtype), config or HPSv2Config())

    @classmethod
    def _assemble(cls, clip: CLIPModel, config: HPSv2Config) -> HPSv2Reward:
        tokenizer = OpenCLIPTokenizer(clip.config.text_config.max_position_embeddings)
        preprocess = config.preprocess or ImagePreprocess(size=clip.config.vision_config.image_size, mode="letterbox")
        return cls(clip, tokenizer, preprocess, config.text_cache_size)
