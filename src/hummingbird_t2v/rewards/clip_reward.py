"""Image-text reward: cosine similarity of CLIP image and text features, per frame, then averaged.

`CLIPImageTextReward` holds a transformers `CLIPModel`, a tokenizer and an `ImagePreprocess`.
It serves both HPSv2.1 (`hpsv2.py` builds it from the open_clip checkpoint) and any CLIP model
saved in the transformers layout (`CLIPImageTextReward.from_pretrained(folder)`: OpenAI CLIP,
LAION CLIP-ViT-H-14, PickScore and similar).

Score of a video = mean over its T frames of  <image_feature / |.|, text_feature / |.|>,
i.e. the raw cosine (no logit scale). The objective picks which frames to pass (the official
recipe: 5 frames drawn with replacement); passing 1 frame scores single images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.tokenizer import OpenCLIPTokenizer
from hummingbird_t2v.rewards.base import DEFAULT_TEXT_CACHE_SIZE, RewardModel, TextFeatureCache, check_frames
from hummingbird_t2v.rewards.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess

PromptTokenizer = Callable[[list[str]], torch.Tensor]  # prompts -> (n, context) int64 token ids


class TransformersPromptTokenizer:
    """A transformers tokenizer padded and cut to a fixed context, returning token ids only.

    The padding mask is not needed: CLIP's text attention is causal and its features are read
    at the end-of-text token, which never sees the padding after it.
    """

    def __init__(self, tokenizer: Callable[..., object], context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.context_length, return_tensors="pt"
        )
        return encoded["input_ids"]  # type: ignore[index]


class CLIPImageTextReward(RewardModel):
    """Mean over frames of the cosine between CLIP image and text features; (b, T, 3, H, W) -> (b,)."""

    def __init__(
        self,
        clip: CLIPModel,
        tokenizer: PromptTokenizer,
        preprocess: ImagePreprocess,
        text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
    ) -> None:
        super().__init__("image_text", None)
        image_size = clip.config.vision_config.image_size
        if preprocess.size != image_size:
            raise ConfigError(f"preprocessing makes {preprocess.size}px images but the CLIP model takes {image_size}px")
        self.clip = clip
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.text_cache = TextFeatureCache(text_cache_size)
        self.freeze()

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed (n, 3, S, S) model input -> (n, D) unit-length float32 image features."""
        pooled = self.clip.vision_model(pixel_values=pixels.to(self.dtype)).pooler_output
        return F.normalize(self.clip.visual_projection(pooled).float(), dim=-1)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """(n, D) unit-length float32 text features, without gradient, cached per prompt."""

        def encode(missing: list[str]) -> torch.Tensor:
            ids = self.tokenizer(missing).to(self.device)
            pooled = self.clip.text_model(input_ids=ids).pooler_output
            return F.normalize(self.clip.text_projection(pooled).float(), dim=-1)

        return self.text_cache.lookup(prompts, encode)

    def score_frames(
        self, frames: torch.Tensor, prompts: Sequence[str], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(b, T, 3, H, W) frames in [0, 1] -> (b, T) per-frame cosine similarities."""
        check_frames(frames, prompts)
        batch, num_frames = frames.shape[:2]
        pixels = self.preprocess(frames.flatten(0, 1), generator)
        images = self.encode_images(pixels).view(batch, num_frames, -1)
        texts = self.encode_text(prompts).to(images.device)
        return (images * texts[:, None]).sum(dim=-1)

    def score(
        self, frames: torch.Tensor, prompts: Sequence[str], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.score_frames(frames, prompts, generator).mean(dim=1)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        preprocess: ImagePreprocess | None = None,
        dtype: torch.dtype = torch.float32,
        text_cache_size: int = DEFAULT_TEXT_CACHE_SIZE,
    ) -> CLIPImageTextReward:
        """Load a local transformers CLIP folder (config.json + weights, tokenizer files optional).

        Without tokenizer files the CLIP BPE tokenizer shipped with this package is used (every
        CLIP model shares the 49,408-token vocabulary). Preprocessing comes from
        preprocessor_config.json when present (shorter side, crop, mean, std), else CLIP's default.
        """
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise CheckpointError(
                f"{folder} is not a transformers model folder (no config.json); pass the folder that "
                "CLIPModel.save_pretrained wrote"
            )
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "clip":
            raise CheckpointError(
                f"{folder} holds a {config.get('model_type')!r} model; the CLIP reward needs model_type 'clip'"
            )
        try:
            clip = CLIPModel.from_pretrained(folder, local_files_only=True).to(dtype)
        except (OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"cannot load the CLIP model in {folder}: {error}") from None
        context_length = clip.config.text_config.max_position_embeddings
        tokenizer: PromptTokenizer
        if any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            try:
                hf_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as error:
                raise CheckpointError(f"cannot load the tokenizer files in {folder}: {error}") from None
            tokenizer = TransformersPromptTokenizer(hf_tokenizer, context_length)
        else:
            tokenizer = OpenCLIPTokenizer(context_length)
        preprocess = preprocess or _preprocess_from_folder(folder, clip.config.vision_config.image_size)
        return cls(clip, tokenizer, preprocess, text_cache_size)


def _preprocess_from_folder(folder: Path, image_size: int) -> ImagePreprocess:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return ImagePreprocess(size=image_size, mode="center_crop")
    settings = json.loads(path.read_text())
    shorter_side = settings.get("size", image_size)
    if isinstance(shorter_side, dict):
        shorter_side = shorter_side.get("shortest_edge", image_size)
    return ImagePreprocess(
        size=image_size,
        mode="center_crop",
        mean=tuple(settings.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(settings.get("image_std", OPENAI_CLIP_STD)),
        resize_size=max(int(shorter_side), image_size),
    )
