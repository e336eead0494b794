"""ViCLIP-L/14 (InternVid) video-text reward, rebuilt on transformers' CLIP blocks.

Why ViCLIP and not InternVideo2-Stage2-1B (the model the official stage 2 uses): ViCLIP is a
CLIP ViT-L/14 with one extra tensor, so every part of it can be written from public facts and
checked against a plain-torch reference; InternVideo2-S2-1B is a 1B-parameter custom ViT with
attention pooling and a BERT-large text encoder whose code we could not reproduce faithfully
without copying it. T2V-Turbo ships ViCLIP as its alternative video reward (``vi_clip``, 8 frames).

Architecture (``ViClip-InternVid-10M-FLT.pth``, i.e. ViCLIP-L/14 trained on InternVid-10M-FLT; the
state dict is under ``"model"``):

* video tower ``vision_encoder.*``: CLIP ViT-L/14 (width 1024, 24 blocks, 16 heads, QuickGELU,
  224 px, output 768). Each frame is cut into 16x16 patches by ``conv1`` (a Conv3d with temporal
  kernel 1, i.e. per-frame patches, no bias); every patch token gets the spatial
  ``positional_embedding[1:]`` and ``temporal_positional_embedding[t]`` (shape (1, 8, 1024): the
  model is trained on exactly 8 frames; with one frame the mean of the 8 rows is used). One class
  token for the whole clip (``class_embedding + positional_embedding[0]``, no temporal term) is
  put in front of all T x 256 patch tokens (ordered patch-major, frame-minor) and the joint
  space-time sequence runs through the blocks; ``ln_post`` of the class token, ``@ proj``.
* text tower ``text_encoder.*``: CLIP text transformer (width 768, 12 blocks, 12 heads, QuickGELU,
  causal mask) with a **32-token** context, pooled at the end-of-text token, ``@ text_projection``.
  Tokenizer: CLIP BPE (same clean-up as open_clip), cut to 32 with the end token kept.
* ``temp``: the contrastive temperature, unused for scoring.

Score = cosine of the L2-normalised video and text features. Preprocessing as T2V-Turbo's video
reward: shorter side to 224 (bicubic), one random 224 crop shared by the batch, ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.tokenizer import OpenCLIPTokenizer
from hummingbird_t2v.rewards.base import (
    DEFAULT_TEXT_CACHE_SIZE,
    RewardInputError,
    RewardModel,
    TextFeatureCache,
    check_frames,
)
from hummingbird_t2v.rewards.convert import (
    clip_text_config,
    convert_open_clip_vision,
    split_prefix,
    text_config_and_weights_from_open_clip,
    vision_config_from_open_clip,
)
from hummingbird_t2v.rewards.loading import build_uninitialised, load_into_uninitialised, read_reward_weights
from hummingbird_t2v.rewards.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess

VICLIP_FILE_NAME = "ViClip-InternVid-10M-FLT.pth"  # the ViCLIP-L/14 InternVid-10M-FLT release
_TEMPORAL_KEY = "temporal_positional_embedding"
_IGNORED_KEYS = frozenset({"temp"})


@dataclass(frozen=True)
class ViCLIPConfig:
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_mlp: int = 4096
    num_frames: int = 8
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_mlp: int = 3072
    context_length: int = 32
    vocab_size: int = 49408
    embed_dim: int = 768
    activation: str = "quick_gelu"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"ViCLIP image size {self.image_size} is not a multiple of the patch {self.patch_size}")
        if self.vision_width % self.vision_heads or self.text_width % self.text_heads:
            raise ConfigError("ViCLIP widths must be divisible by their numbers of heads")
        if self.num_frames < 1:
            raise ConfigError(f"ViCLIP num_frames must be >= 1, got {self.num_frames}")

    @classmethod
    def preset(cls, name: str) -> ViCLIPConfig:
        """ "viclip-l14": the released ViCLIP-L/14; "tiny": the same structure at width 32 (tests)."""
        presets = {
            "viclip-l14": cls(),
            "tiny": cls(
                image_size=28,
                vision_width=32,
                vision_layers=2,
                vision_heads=4,
                vision_mlp=128,
                num_frames=4,
                text_width=32,
                text_layers=2,
                text_heads=4,
                text_mlp=128,
                embed_dim=16,
            ),
        }
        if name not in presets:
            raise ConfigError(f"unknown ViCLIP preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    def vision_config(self) -> CLIPVisionConfig:
        return CLIPVisionConfig(
            hidden_size=self.vision_width,
            intermediate_size=self.vision_mlp,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            projection_dim=self.embed_dim,
            hidden_act=self.activation,
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
        )

    def text_config(self) -> CLIPTextConfig:
        return clip_text_config(
            vocab_size=self.vocab_size,
            hidden_size=self.text_width,
            intermediate_size=self.text_mlp,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.context_length,
            projection_dim=self.embed_dim,
            hidden_act=self.activation,
        )


def convert_viclip_state_dict(
    state_dict: Mapping[str, torch.Tensor], vision_heads: int | None = None, text_heads: int | None = None
) -> tuple[ViCLIPConfig, dict[str, torch.Tensor]]:
    """Official ViCLIP keys (``vision_encoder.*``, ``text_encoder.*``, ``temp``) -> (config, `ViCLIPReward` names)."""
    vision = split_prefix(state_dict, "vision_encoder.")
    text = split_prefix(state_dict, "text_encoder.")
    stray = sorted(
        key
        for key in state_dict
        if not key.startswith(("vision_encoder.", "text_encoder.")) and key not in _IGNORED_KEYS
    )
    if not vision or not text or stray:
        raise CheckpointError(
            "not a ViCLIP state dict: expected 'vision_encoder.*', 'text_encoder.*' and 'temp' "
            f"(vision keys: {len(vision)}, text keys: {len(text)}, others: {stray[:5]})"
        )
    temporal = vision.pop(_TEMPORAL_KEY, None)
    if temporal is None or temporal.ndim != 3 or temporal.shape[0] != 1:
        raise CheckpointError(
            f"vision_encoder.{_TEMPORAL_KEY} of shape (1, frames, width) is missing: this is a plain CLIP, not ViCLIP"
        )
    vision_config = vision_config_from_open_clip(vision, vision_heads, "quick_gelu")
    text_config, text_weights = text_config_and_weights_from_open_clip(text, text_heads, "quick_gelu")
    if temporal.shape[2] != vision_config.hidden_size:
        raise CheckpointError(
            f"temporal embedding width {temporal.shape[2]} != vision width {vision_config.hidden_size}"
        )
    if text_config.projection_dim != vision_config.projection_dim:
        raise CheckpointError(
            f"video and text projections differ ({vision_config.projection_dim} vs {text_config.projection_dim})"
        )
    config = ViCLIPConfig(
        image_size=vision_config.image_size,
        patch_size=vision_config.patch_size,
        vision_width=vision_config.hidden_size,
        vision_layers=vision_config.num_hidden_layers,
        vision_heads=vision_config.num_attention_heads,
        vision_mlp=vision_config.intermediate_size,
        num_frames=int(temporal.shape[1]),
        text_width=text_config.hidden_size,
        text_layers=text_config.num_hidden_layers,
        text_heads=text_config.num_attention_heads,
        text_mlp=text_config.intermediate_size,
        context_length=text_config.max_position_embeddings,
        vocab_size=text_config.vocab_size,
        embed_dim=vision_config.projection_dim,
    )
    converted = {f"vision.{k}": v for k, v in convert_open_clip_vision(vision, config.vision_width).items()}
    converted["temporal_embedding"] = temporal
    converted.update({f"text.{k}": v for k, v in text_weights.items()})
    return config, converted


class ViCLIPReward(RewardModel):
    """ViCLIP video-text reward: (b, T, 3, H, W) with T = num_frames (8) -> (b,) cosine similarity."""

    def __init__(
        self,
        config: ViCLIPConfig | None = None,
        preprocess: ImagePreprocess | None = None,
        text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
    ) -> None:
        config = config or ViCLIPConfig()
        super().__init__("video_text", config.num_frames)
        self.config = config
        self.preprocess = preprocess or ImagePreprocess(
            size=config.image_size, mode="random_crop", mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
        if self.preprocess.size != config.image_size:
            raise ConfigError(
                f"preprocessing makes {self.preprocess.size}px frames, ViCLIP takes {config.image_size}px"
            )
        self.vision = CLIPVisionModelWithProjection(config.vision_config())
        self.temporal_embedding = nn.Parameter(torch.zeros(1, config.num_frames, config.vision_width))
        self.text = CLIPTextModelWithProjection(config.text_config())
        self.tokenizer = OpenCLIPTokenizer(config.context_length)
        self.text_cache = TextFeatureCache(text_cache_size)
        self.freeze()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        vision_heads: int | None = None,
        text_heads: int | None = None,
        preprocess: ImagePreprocess | None = None,
        dtype: torch.dtype = torch.float32,
        text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
    ) -> ViCLIPReward:
        """Load ``ViClip-InternVid-10M-FLT.pth`` (or another file in the same layout)."""
        config, converted = convert_viclip_state_dict(read_reward_weights(path), vision_heads, text_heads)
        model = build_uninitialised(lambda: cls(config, preprocess, text_cache_size))
        return load_into_uninitialised(model, converted, "ViCLIP", dtype)

    @classmethod
    def random(cls, preset: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32) -> ViCLIPReward:
        """Random weights in the ViCLIP structure: for tests and smoke runs only."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(ViCLIPConfig.preset(preset))
            nn.init.normal_(model.temporal_embedding, std=0.02)
        return model.to(dtype)

    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed (b, T, 3, S, S) clips -> (b, D) unit-length float32 video features."""
        batch, num_frames = pixels.shape[:2]
        vision = self.vision.vision_model
        embeddings = vision.embeddings
        patches = embeddings.patch_embedding(pixels.flatten(0, 1).to(self.dtype))  # (b*T, W, g, g)
        patches = patches.flatten(2).transpose(1, 2)  # (b*T, N, W)
        positions = embeddings.position_embedding.weight
        patches = (patches + positions[1:]).view(batch, num_frames, -1, self.config.vision_width)
        temporal = self.temporal_embedding if num_frames > 1 else self.temporal_embedding.mean(1, keepdim=True)
        patches = patches + temporal[:, :, None, :]
        # Patch-major, frame-minor token order, as the official model lays out its sequence.
        tokens = patches.transpose(1, 2).reshape(batch, -1, self.config.vision_width)
        class_token = (embeddings.class_embedding + positions[0]).expand(batch, 1, -1)
        hidden = vision.pre_layrnorm(torch.cat([class_token, tokens], dim=1))
        hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
        pooled = vision.post_layernorm(hidden[:, 0])
        return F.normalize(self.vision.visual_projection(pooled).float(), dim=-1)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(n, D) unit-length float32 text features, without gradient, cached per prompt."""

        def encode(missing: list[str]) -> torch.Tensor:
            ids = self.tokenizer(missing).to(self.device)
            pooled = self.text.text_model(input_ids=ids).pooler_output
            return F.normalize(self.text.text_projection(pooled).float(), dim=-1)

        return self.text_cache.lookup(prompts, encode)

    def score(
        self, frames: torch.Tensor, prompts: Sequence[str], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        check_frames(frames, prompts)
        batch, num_frames = frames.shape[:2]
        if num_frames not in (1, self.config.num_frames):
            raise RewardInputError(
                f"ViCLIP's temporal position embedding has {self.config.num_frames} rows, so it scores clips of "
                f"exactly {self.config.num_frames} frames (or single frames); got {num_frames}. "
                f"Select {self.config.num_frames} strided frames first"
            )
        pixels = self.preprocess(frames.flatten(0, 1), generator)
        video = self.encode_video(pixels.view(batch, num_frames, *pixels.shape[1:]))
        text = self.encode_text(prompts).to(video.device)
        return (video * text).sum(dim=-1)
