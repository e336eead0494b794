"""Captions for toy scenes: a canonical wording plus random paraphrases from templates."""

from __future__ import annotations

import re

import numpy as np

from hummingbird_t2v.toyworld.scene import ObjectSpec, SceneSpec
from hummingbird_t2v.toyworld.vocabulary import (
    BACKGROUND_WORDS,
    CAMERA_WORDS,
    COLOR_WORDS,
    MOTION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
)

__all__ = ["canonical_caption", "paraphrase_caption"]

# {objects} is one object with its motion, or two joined by "and"; {background} and {camera}
# come from the vocabulary (the camera phrase starts with ", " or is empty).
_TEMPLATES = (
    "{objects} {background}{camera}",
    "video of {objects} {background}{camera}",
    "{objects_still} {background}, {motions}{camera}",
    "animation of {objects} {background}{camera}",
)


_CANONICAL_WEIGHT = 0.5  # a paraphrase keeps each attribute's canonical word half the time
_ARTICLE_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _pick(words: tuple[str, ...], rng: np.random.Generator | None) -> str:
    if rng is None or len(words) == 1 or rng.random() < _CANONICAL_WEIGHT:
        return words[0]
    return words[1 + int(rng.integers(len(words) - 1))]


def _noun_phrase(obj: ObjectSpec, rng: np.random.Generator | None) -> str:
    words = [_pick(SIZE_WORDS[obj.size], rng), _pick(COLOR_WORDS[obj.color], rng), _pick(SHAPE_WORDS[obj.shape], rng)]
    return "a " + " ".join(word for word in words if word)  # "a" becomes "an" in _render


def _render(scene: SceneSpec, rng: np.random.Generator | None) -> str:
    template = _pick(_TEMPLATES, rng)
    nouns = [_noun_phrase(obj, rng) for obj in scene.objects]
    motions = [_pick(MOTION_WORDS[obj.motion], rng) for obj in scene.objects]
    background = scene.background
    color_words = {
        "c": _pick(COLOR_WORDS[background.color], rng),
        "c1": _pick(COLOR_WORDS[background.color], rng),
        "c2": _pick(COLOR_WORDS[background.color2], rng) if background.color2 else "",
    }
    # With two objects, "..., the first moving left and the second rising" keeps each motion
    # with its object when the motions follow the background.
    trailing = motions if len(motions) == 1 else [f"the first {motions[0]}", f"the second {motions[1]}"]
    caption = template.format(
        objects=" and ".join(f"{noun} {motion}" for noun, motion in zip(nouns, motions, strict=True)),
        objects_still=" and ".join(nouns),
        motions=" and ".join(trailing),
        background=_pick(BACKGROUND_WORDS[background.kind], rng).format(**color_words),
        camera=_pick(CAMERA_WORDS[scene.camera.kind], rng),
    )
    return _ARTICLE_BEFORE_VOWEL.sub(r"\1n ", caption)


def canonical_caption(scene: SceneSpec) -> str:
    """The scene in the canonical words, e.g. "a red circle moving left on a blue background"."""
    return _render(scene, None)


def paraphrase_caption(scene: SceneSpec, rng: np.random.Generator) -> str:
    """A random template with random synonyms for every attribute (may equal the canonical one)."""
    return _render(scene, rng)
