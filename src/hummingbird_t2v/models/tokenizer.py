"""The OpenCLIP text tokenizer, rebuilt on transformers' CLIPTokenizer (no open_clip at run time).

The ids must equal what the official code feeds its text tower (`open_clip.tokenize`), so the text
clean-up happens here, in open_clip's order, and transformers only runs the byte-level BPE:

1. `ftfy.fix_text` (repairs mojibake such as "cafÃ©" -> "café"), `html.unescape` twice, strip;
2. runs of whitespace collapsed to one space, lower-case;
3. byte-level BPE with the 49,408-entry CLIP vocabulary;
4. row = [49406] + ids + [49407], cut to 77 with the last id forced to 49407, zero padding.

The vocabulary comes from the BPE merges file shipped in `hummingbird_t2v/assets` (MIT, from the
open_clip wheel). The token table is built in memory from it: the 256 byte symbols, the same 256
with the end-of-word marker, one entry per merge, then the two special tokens.
"""

from __future__ import annotations

import functools
import gzip
import html
import re
from importlib import resources

import ftfy
import torch
from transformers import CLIPTokenizer

from hummingbird_t2v.errors import HummingbirdError

START_OF_TEXT_ID = 49406
END_OF_TEXT_ID = 49407
PAD_ID = 0  # open_clip pads with 0 (which is also the id of "!"), not with the end token
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408

_START_TOKEN = "<|startoftext|>"
_END_TOKEN = "<|endoftext|>"
_END_OF_WORD = "</w>"
_BPE_ASSET = "bpe_simple_vocab_16e6.txt.gz"
# The merges file holds more merges than CLIP uses; the vocabulary keeps only as many as fit in
# 49408 ids next to 2 x 256 byte symbols and the 2 special tokens.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2
_WHITESPACE_RUN = re.compile(r"\s+")


class TokenizerError(HummingbirdError):
    """The shipped BPE vocabulary is missing or does not give the 49,408-token CLIP vocabulary."""


def _byte_symbols() -> list[str]:
    """One printable unicode character per byte value, in CLIP's vocabulary order.

    Byte-level BPE needs every byte to be a visible, non-whitespace character. Bytes that are
    printable Latin-1 characters stand for themselves (listed first, in byte order); the remaining
    68 bytes (controls, space, soft hyphen, ...) are given code points 256, 257, ... in byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    printable_set = set(printable)
    others = [b for b in range(256) if b not in printable_set]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _read_merges() -> list[str]:
    try:
        data = resources.files("hummingbird_t2v.assets").joinpath(_BPE_ASSET).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError) as error:
        raise TokenizerError(
            f"the CLIP BPE vocabulary {_BPE_ASSET} is missing from the hummingbird_t2v package "
            "(hummingbird_t2v/assets); reinstall the package"
        ) from error
    lines = gzip.decompress(data).decode("utf-8").split("\n")
    # Line 0 is a version header; then one merge ("a b") per line.
    merges = lines[1 : 1 + _NUM_MERGES]
    if len(merges) != _NUM_MERGES or any(len(m.split(" ")) != 2 for m in merges):
        raise TokenizerError(
            f"{_BPE_ASSET} is truncated or malformed (expected {_NUM_MERGES} merges of two symbols); "
            "reinstall the package"
        )
    return merges


@functools.lru_cache(maxsize=1)
def _build_clip_bpe() -> CLIPTokenizer:
    """The transformers tokenizer with the full CLIP vocabulary, built once per process."""
    merges = _read_merges()
    symbols = _byte_symbols()
    tokens = symbols + [s + _END_OF_WORD for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += [_START_TOKEN, _END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        # We cut and pad ourselves; an unbounded limit keeps transformers from warning on long prompts.
        model_max_length=10**9,
    )
    # transformers falls back to a 3-token vocabulary when it receives none; a silent fallback
    # would turn every prompt into unknown tokens, so check the result.
    if len(vocab) != VOCAB_SIZE or len(tokenizer) != VOCAB_SIZE:
        raise TokenizerError(
            f"the CLIP tokenizer has {len(tokenizer)} tokens instead of {VOCAB_SIZE} "
            f"(vocabulary built from {_BPE_ASSET}); reinstall the package"
        )
    if (tokenizer.convert_tokens_to_ids(_START_TOKEN), tokenizer.convert_tokens_to_ids(_END_TOKEN)) != (
        START_OF_TEXT_ID,
        END_OF_TEXT_ID,
    ):
        raise TokenizerError("the CLIP tokenizer's special-token ids are not 49406/49407; reinstall the package")
    return tokenizer


def clean_text(text: str) -> str:
    """open_clip's text clean-up: repair, unescape HTML twice, strip, collapse whitespace, lower-case."""
    text = ftfy.fix_text(text)
    # Twice, because captions scraped from the web are often escaped twice ("&amp;amp;").
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


class OpenCLIPTokenizer:
    """Prompts -> (b, 77) int64 token ids, identical to `open_clip.tokenize`."""

    def __init__(self, context_length: int = CONTEXT_LENGTH) -> None:
        if context_length < 2:
            raise TokenizerError(f"context_length must be at least 2 (start and end token), got {context_length}")
        self.context_length = context_length
        self._bpe = _build_clip_bpe()

    @property
    def vocab_size(self) -> int:
        return len(self._bpe)

    def encode_text(self, text: str) -> list[int]:
        """BPE ids of one prompt after clean-up, without start/end tokens and without cutting."""
        return self._bpe(clean_text(text), add_special_tokens=False)["input_ids"]

    def __call__(self, prompts: str | list[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
            raise TokenizerError("prompts must be a string or a list of strings")
        rows = torch.full((len(prompts), self.context_length), PAD_ID, dtype=torch.long)
        body_length = self.context_length - 2
        for row, prompt in enumerate(prompts):
            # Cutting the body to 75 ids and then appending the end token equals open_clip's
            # "cut to 77, overwrite the last id with the end token".
            ids = [START_OF_TEXT_ID, *self.encode_text(prompt)[:body_length], END_OF_TEXT_ID]
            rows[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return rows
