"""The OpenCLIP ViT-H/14 text tower as VideoCrafter2 uses it, on transformers' CLIPTextModel.

The official `FrozenOpenCLIPEmbedder` (layer "penultimate") embeds tokens, adds positions, runs
all residual blocks but the last one with a causal mask, applies the final LayerNorm and
returns all 77 positions: no padding mask, no pooling, no text projection. That sequence is the
U-Net's cross-attention context; the empty prompt "" gives the unconditional context for CFG.

open_clip's text blocks are the same pre-norm transformer blocks as transformers' CLIP text
encoder (LayerNorm eps 1e-5, exact-erf GELU for ViT-H/14, not OpenAI's QuickGELU), so a
CLIPTextModel with one block fewer computes the penultimate output directly: the unused last
block is never built, which saves 12.6 M parameters and its compute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.tokenizer import END_OF_TEXT_ID, PAD_ID, START_OF_TEXT_ID, OpenCLIPTokenizer

OutputLayer = Literal["penultimate", "last"]


@dataclass(frozen=True)
class TextEncoderConfig:
    """Shape of an open_clip text tower; `layers` counts the blocks stored in the checkpoint."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    vocab_size: int = 49408
    context_length: int = 77
    mlp_ratio: float = 4.0
    activation: str = "gelu"  # exact-erf GELU; OpenAI's own CLIP models use "quick_gelu"
    layer_norm_eps: float = 1e-5
    layer: OutputLayer = "penultimate"

    def __post_init__(self) -> None:
        if self.layer not in ("penultimate", "last"):
            raise ConfigError(f"text encoder layer must be 'penultimate' or 'last', got {self.layer!r}")
        if self.heads < 1 or self.width % self.heads:
            raise ConfigError(f"text encoder width {self.width} is not divisible by heads={self.heads}")
        if self.layers < self.blocks_to_run or self.blocks_to_run < 1:
            raise ConfigError(f"text encoder with layers={self.layers} cannot output layer {self.layer!r}")
        if self.mlp_hidden != self.width * self.mlp_ratio:
            raise ConfigError(f"text encoder mlp_ratio={self.mlp_ratio} gives a fractional MLP width")

    @property
    def blocks_to_run(self) -> int:
        """Blocks built and run: all but the last for "penultimate"."""
        return self.layers - 1 if self.layer == "penultimate" else self.layers

    @property
    def mlp_hidden(self) -> int:
        return int(self.width * self.mlp_ratio)

    @classmethod
    def preset(cls, name: str) -> TextEncoderConfig:
        """"vit-h-14": the OpenCLIP ViT-H/14 text tower of VideoCrafter2/Hummingbird;
        "tiny": the golden test tower (width 32, 3 blocks, 4 heads)."""
        presets = {
            "vit-h-14": cls(),
            "tiny": cls(width=32, layers=3, heads=4),
        }
        if name not in presets:
            raise ConfigError(f"unknown text encoder preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TextEncoderConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def clip_text_config(self) -> CLIPTextConfig:
        """The transformers config of the blocks that are actually run."""
        return CLIPTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.width,
            intermediate_size=self.mlp_hidden,
            num_hidden_layers=self.blocks_to_run,
            num_attention_heads=self.heads,
            max_position_embeddings=self.context_length,
            hidden_act=self.activation,
            layer_norm_eps=self.layer_norm_eps,
            attention_dropout=0.0,
            bos_token_id=START_OF_TEXT_ID,
            eos_token_id=END_OF_TEXT_ID,
            pad_token_id=PAD_ID,
        )


def _text_transformer(model: CLIPTextModel) -> nn.Module:
    """The module holding embeddings/encoder/final_layer_norm.

    transformers 4.x nests it as `CLIPTextModel.text_model`; 5.x made CLIPTextModel itself that
    module. Holding it directly keeps our state-dict names the same under both.
    """
    return getattr(model, "text_model", model)


class OpenCLIPTextEncoder(nn.Module):
    """Token ids (b, 77) -> text context (b, 77, width)."""

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextEncoderConfig()
        self.transformer = _text_transformer(CLIPTextModel(self.config.clip_text_config()))
        self._tokenizer: OpenCLIPTokenizer | None = None

    @property
    def tokenizer(self) -> OpenCLIPTokenizer:
        if self._tokenizer is None:
            self._tokenizer = OpenCLIPTokenizer(self.config.context_length)
        return self._tokenizer

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        expected = self.config.context_length
        if token_ids.ndim != 2 or token_ids.shape[1] != expected:
            raise ConfigError(f"token_ids must have shape (batch, {expected}), got {tuple(token_ids.shape)}")
        if token_ids.dtype not in (torch.int32, torch.int64):
            raise ConfigError(f"token_ids must be an integer tensor, got {token_ids.dtype}")
        if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size):
            raise ConfigError(f"token ids must lie in [0, {self.config.vocab_size}); use OpenCLIPTokenizer")
        # No attention_mask: open_clip masks only causally, so padding positions attend to the
        # prompt and are returned too (the U-Net cross-attends to all 77 positions).
        return self.transformer(input_ids=token_ids).last_hidden_state

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> context (b, 77, width) on this module's device and dtype."""
        device = self.transformer.embeddings.token_embedding.weight.device
        return self(self.tokenizer(prompts).to(device))
