"""A small word-level text encoder for closed-vocabulary worlds such as the toy world.

Prompts are lower-cased and split into words (letters and digits; hyphens and punctuation
separate words, so "grass-green" is "grass" "green"); words outside the stored vocabulary become
<unk>. The sequence is <start> words <end>, padded to `context_length`. A few pre-norm
transformer blocks contextualise it; like the CLIP context the U-Net normally reads, every one of
the `context_length` positions is returned, padding included: padding positions attend to the
prompt's tokens (keys are masked, queries are not), so they carry a summary of the prompt. The
<start> token also gives the empty prompt "" (the unconditional context of classifier-free
guidance) a real key to attend to.

The vocabulary lives in the config, so `config.json` alone rebuilds the tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    """The words a prompt is made of, as the tokenizer sees them."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class WordTextEncoderConfig:
    vocabulary: tuple[str, ...] = ()  # the known words; special tokens are added in front
    width: int = 128
    layers: int = 2
    heads: int = 4
    context_length: int = 40
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocabulary", tuple(str(word) for word in self.vocabulary))
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise ConfigError("WordTextEncoderConfig.vocabulary has repeated words")
        bad = [word for word in self.vocabulary if word in SPECIAL_TOKENS or split_words(word) != [word]]
        if bad:
            raise ConfigError(f"vocabulary entries must be single lower-case words, got {bad[:5]}")
        if self.heads < 1 or self.width % self.heads:
            raise ConfigError(f"text encoder width {self.width} is not divisible by heads={self.heads}")
        if self.layers < 1 or self.context_length < 3 or self.mlp_ratio < 1:
            raise ConfigError("WordTextEncoderConfig needs layers >= 1, context_length >= 3 and mlp_ratio >= 1")

    @property
    def num_tokens(self) -> int:
        return len(SPECIAL_TOKENS) + len(self.vocabulary)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["vocabulary"] = list(self.vocabulary)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTextEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown WordTextEncoderConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)


class WordTokenizer:
    """Prompts -> token ids (b, context_length) and the padding mask (True where a real token is)."""

    def __init__(self, vocabulary: tuple[str, ...], context_length: int) -> None:
        self.ids = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *vocabulary))}
        self.context_length = context_length

    def __call__(self, prompts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = torch.full((len(prompts), self.context_length), self.ids[PAD], dtype=torch.long)
        unknown = self.ids[UNK]
        for row, prompt in enumerate(prompts):
            # Over-long prompts keep their first words; <end> always closes the sequence.
            words = split_words(prompt)[: self.context_length - 2]
            tokens = [self.ids[START], *(self.ids.get(word, unknown) for word in words), self.ids[END]]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.ids[PAD]


class WordTextEncoder(nn.Module):
    """Prompts -> context (b, context_length, width): word embeddings + positions + transformer."""

    def __init__(self, config: WordTextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or WordTextEncoderConfig()
        c = self.config
        self.token_embedding = nn.Embedding(c.num_tokens, c.width)
        self.position_embedding = nn.Parameter(torch.zeros(c.context_length, c.width))
        block = nn.TransformerEncoderLayer(
            c.width, c.heads, c.width * c.mlp_ratio, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, c.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(c.width)
        self.tokenizer = WordTokenizer(c.vocabulary, c.context_length)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)

    def forward(self, token_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids and padding mask (b, context_length) -> (b, context_length, width)."""
        expected = (token_ids.shape[0], self.config.context_length)
        if token_ids.ndim != 2 or tuple(token_ids.shape) != expected or tuple(mask.shape) != expected:
            raise ConfigError(f"token_ids and mask must have shape (batch, {self.config.context_length})")
        hidden = self.token_embedding(token_ids) + self.position_embedding
        return self.final_norm(self.blocks(hidden, src_key_padding_mask=~mask))

    def encode(self, prompts: str | list[str]) -> torch.Tensor:
        """Prompts -> context (b, context_length, width) on this module's device and dtype."""
        token_ids, mask = self.tokenizer(prompts)
        device = self.token_embedding.weight.device
        return self(token_ids.to(device), mask.to(device))

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` this encoder does not know (they are read as <unk>)."""
        return [word for word in split_words(prompt) if word not in self.tokenizer.ids]
