"""OpenCLIP tokenizer: ids equal to open_clip.tokenize on the 14 golden prompts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.models.tokenizer import (
    END_OF_TEXT_ID,
    START_OF_TEXT_ID,
    VOCAB_SIZE,
    OpenCLIPTokenizer,
    TokenizerError,
    clean_text,
)


@pytest.fixture(scope="module")
def tokenizer():
    return OpenCLIPTokenizer()


@pytest.fixture(scope="module")
def golden(golden_dir):
    prompts = json.loads((golden_dir / "tiny_openclip_text_prompts.json").read_text())
    tokens = load_file(golden_dir / "tiny_openclip_text_io.safetensors")["tokens"]
    return prompts, tokens


def test_vocabulary_is_complete(tokenizer):
    assert tokenizer.vocab_size == VOCAB_SIZE == 49408


def test_tokens_match_open_clip_for_every_golden_prompt(tokenizer, golden):
    prompts, expected = golden
    tokens = tokenizer(prompts["prompts"])
    assert tokens.dtype == torch.long and tokens.shape == (14, 77)
    for row, prompt in enumerate(prompts["prompts"]):
        assert tokens[row].tolist() == expected[row].tolist(), f"prompt {row}: {prompt!r}"


def test_untruncated_lengths_match(tokenizer, golden):
    prompts, _ = golden
    lengths = [len(tokenizer.encode_text(p)) + 2 for p in prompts["prompts"]]
    assert lengths == prompts["n_tokens_untruncated"]


def test_row_layout_single_prompt_and_truncation(tokenizer):
    empty = tokenizer("")
    assert empty.shape == (1, 77)
    assert empty[0, :2].tolist() == [START_OF_TEXT_ID, END_OF_TEXT_ID] and not empty[0, 2:].any()
    long = tokenizer("dog " * 200)[0]
    assert long[0] == START_OF_TEXT_ID and long[-1] == END_OF_TEXT_ID
    assert (long[1:-1] == long[1]).all()


def test_clean_text_repairs_mojibake_and_entities():
    assert clean_text("cafÃ© au lait") == "café au lait"
    assert clean_text("  Rock &amp;amp;\tRoll \n") == "rock & roll"


def test_bad_input_raises(tokenizer):
    with pytest.raises(TokenizerError):
        tokenizer(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(TokenizerError):
        OpenCLIPTokenizer(context_length=1)
