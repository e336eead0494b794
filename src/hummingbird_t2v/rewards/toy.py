"""Toy-world video-text reward: how sure the toy evaluator is that the clip shows what the prompt says.

The toy evaluator is a small video classifier with one head per attribute (colour, shape, motion,
camera, ...). This reward parses the prompt into attribute values and returns, per video, the
mean over the targeted attributes of the evaluator's log-probability (or probability) of the
prompted value. It is differentiable in the frames, so reward feedback pushes the student towards
clips the evaluator recognises; targeting a subset (e.g. only ``"color"``) lets the toy experiment
show that feedback improves the targeted attribute and leaves the others alone.

Classifier contract (duck-typed; the toy evaluator in `toyworld` provides it):

    classifier: nn.Module
    classifier.attribute_values: Mapping[str, Sequence[str]]
        attribute -> value names in logit order, e.g. {"color": ["red", "orange", ...], ...};
        names as in the toy world's ground truth: shape, color, size, motion, shape2, color2,
        size2, motion2, num_objects ("1"/"2"), background, background_color, background_color2, camera
    classifier(frames) -> Mapping[str, Tensor]
        frames (b, T, 3, H, W) float in [0, 1]; returns unnormalised logits (b, n_values) per attribute
    optional: classifier.num_frames (int)       the T it expects; other T are refused
    optional: classifier.image_size ((h, w))    frames of another size are resized to it (bilinear)

Prompt attributes a prompt does not state (or that the classifier cannot name) do not count for
that video; a video with none of the targeted attributes gets reward 0 (and no gradient).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.rewards.base import RewardInputError, RewardModel, check_frames

DEFAULT_TOY_NUM_FRAMES = 8
ScoreMode = Literal["log_prob", "prob"]
PromptParser = Callable[[str], Mapping[str, str]]


class AttributeClassifier(Protocol):
    """What the toy reward needs from the evaluator (see the module docstring)."""

    attribute_values: Mapping[str, Sequence[str]]

    def __call__(self, frames: torch.Tensor) -> Mapping[str, torch.Tensor]: ...


@dataclass(frozen=True)
class ToyPromptVocabulary:
    """Value -> phrases tables (first phrase canonical; "" means "unmarked default")."""

    shapes: Mapping[str, tuple[str, ...]]
    colors: Mapping[str, tuple[str, ...]]
    sizes: Mapping[str, tuple[str, ...]]
    motions: Mapping[str, tuple[str, ...]]
    backgrounds: Mapping[str, tuple[str, ...]]  # templates with {c}, or {c1} and {c2}
    cameras: Mapping[str, tuple[str, ...]]  # phrases may start with ", "

    @classmethod
    def from_toyworld(cls) -> ToyPromptVocabulary:
        # Imported here: the vocabulary is plain data of the toy world, which sits above the
        # reward layer; only the toy reward needs it.
        from hummingbird_t2v.toyworld import vocabulary

        return cls(
            shapes=vocabulary.SHAPE_WORDS,
            colors=vocabulary.COLOR_WORDS,
            sizes=vocabulary.SIZE_WORDS,
            motions=vocabulary.MOTION_WORDS,
            backgrounds=vocabulary.BACKGROUND_WORDS,
            cameras=vocabulary.CAMERA_WORDS,
        )


def _phrase_table(table: Mapping[str, tuple[str, ...]]) -> tuple[str, dict[str, str], str | None]:
    """(regex alternation longest phrase first, phrase -> value, value of the empty phrase)."""
    lookup: dict[str, str] = {}
    unmarked = None
    for value, phrases in table.items():
        for phrase in phrases:
            phrase = " ".join(phrase.strip(" ,").lower().split())
            if phrase:
                lookup[phrase] = value
            else:
                unmarked = value
    alternation = "|".join(re.escape(p) for p in sorted(lookup, key=len, reverse=True))
    return f"(?:{alternation})", lookup, unmarked


def _template_regex(template: str, color_pattern: str) -> str:
    """A background template as a regex: {c}/{c1}/{c2} become named colour groups, "a" may be "an"."""
    parts = re.split(r"(\{c\d?\})", template.lower())
    pieces = []
    for part in parts:
        if re.fullmatch(r"\{c\d?\}", part):
            pieces.append(f"(?P<{part[1:-1]}>{color_pattern})")
        else:
            # Captions turn "a" into "an" before a vowel; words are single-space separated.
            pieces.append(" ".join("an?" if word == "a" else re.escape(word) for word in part.split(" ")))
    return r"\b" + "".join(pieces) + r"\b"


class ToyPromptParser:
    """Toy-world prompt -> attribute values, e.g. "a red circle moving left on a blue background" ->
    {"num_objects": "1", "shape": "circle", "color": "red", "size": "medium", "motion": "left",
    "background": "solid", "background_color": "blue", "camera": "still"}. Paraphrases are understood."""

    def __init__(self, vocabulary: ToyPromptVocabulary | None = None) -> None:
        vocabulary = vocabulary or ToyPromptVocabulary.from_toyworld()
        shape_pattern, self._shapes, _ = _phrase_table(vocabulary.shapes)
        color_pattern, self._colors, _ = _phrase_table(vocabulary.colors)
        size_pattern, self._sizes, self._default_size = _phrase_table(vocabulary.sizes)
        motion_pattern, self._motions, _ = _phrase_table(vocabulary.motions)
        camera_pattern, self._cameras, self._default_camera = _phrase_table(vocabulary.cameras)
        self._camera = re.compile(rf"\b{camera_pattern}\b")
        self._motion = re.compile(rf"\b{motion_pattern}\b")
        self._noun = re.compile(
            rf"\ban? (?:(?P<size>{size_pattern}) )?(?P<color>{color_pattern}) (?P<shape>{shape_pattern})\b"
        )
        self._backgrounds = [
            (kind, re.compile(_template_regex(template, color_pattern)))
            for kind, templates in vocabulary.backgrounds.items()
            for template in templates
        ]

    def __call__(self, prompt: str) -> dict[str, str]:
        text = " ".join(prompt.lower().split())
        found: dict[str, str] = {}
        camera = self._camera.search(text)
        if camera:
            found["camera"] = self._cameras[camera.group(0)]
            text = _blank(text, camera.span())
        elif self._default_camera is not None:
            found["camera"] = self._default_camera
        background = min(
            ((kind, m) for kind, regex in self._backgrounds if (m := regex.search(text))),
            key=lambda item: (item[1].start(), -len(item[1].group(0))),
            default=None,
        )
        if background:
            kind, match = background
            found["background"] = kind
            for group, key in (("c", "background_color"), ("c1", "background_color"), ("c2", "background_color2")):
                if group in match.re.groupindex and match.group(group):
                    found[key] = self._colors[match.group(group)]
            text = _blank(text, match.span())
        nouns = list(self._noun.finditer(text))
        for noun in nouns:
            text = _blank(text, noun.span())
        motions = [self._motions[m.group(0)] for m in self._motion.finditer(text)]
        if nouns:
            found["num_objects"] = str(len(nouns))
        for position, noun in enumerate(nouns):
            suffix = "" if position == 0 else str(position + 1)
            found["shape" + suffix] = self._shapes[noun.group("shape")]
            found["color" + suffix] = self._colors[noun.group("color")]
            size = self._sizes.get(noun.group("size") or "", self._default_size)
            if size is not None:
                found["size" + suffix] = size
            if position < len(motions):
                found["motion" + suffix] = motions[position]
        return found


def _blank(text: str, span: tuple[int, int]) -> str:
    """Replace a matched phrase by spaces so later patterns cannot reuse its words."""
    start, end = span
    return text[:start] + " " * (end - start) + text[end:]


class ToyAttributeReward(RewardModel):
    """Mean over targeted attributes of log p(prompted value | frames) under the toy evaluator."""

    def __init__(
        self,
        classifier: nn.Module,
        attributes: Sequence[str] | None = None,
        *,
        parser: PromptParser | None = None,
        num_frames: int | None = None,
        mode: ScoreMode = "log_prob",
    ) -> None:
        values = getattr(classifier, "attribute_values", None)
        if not isinstance(classifier, nn.Module) or not isinstance(values, Mapping) or not values:
            raise ConfigError(
                "the toy reward needs an nn.Module classifier with an `attribute_values` mapping "
                "(attribute -> value names in logit order)"
            )
        targeted = tuple(attributes) if attributes else tuple(values)
        unknown = [a for a in targeted if a not in values]
        if unknown:
            raise ConfigError(f"the classifier does not predict {unknown}; it predicts {sorted(values)}")
        if mode not in ("log_prob", "prob"):
            raise ConfigError(f"toy reward mode must be 'log_prob' or 'prob', got {mode!r}")
        classifier_frames = getattr(classifier, "num_frames", None)
        if num_frames is not None and classifier_frames is not None and num_frames != classifier_frames:
            raise ConfigError(f"num_frames={num_frames} but the classifier expects {classifier_frames} frames")
        super().__init__("video_text", num_frames or classifier_frames or DEFAULT_TOY_NUM_FRAMES)
        self.classifier = classifier
        self.attributes = targeted
        self.mode: ScoreMode = mode
        self.parser: PromptParser = parser or ToyPromptParser()
        self._value_index = {a: {str(v): i for i, v in enumerate(values[a])} for a in targeted}
        self._fixed_frames = classifier_frames
        self.freeze()

    def targets(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """attribute -> (b,) int64 index of the prompted value, -1 where the prompt does not say."""
        parsed = [self.parser(prompt) for prompt in prompts]
        return {
            attribute: torch.tensor([index.get(p.get(attribute, ""), -1) for p in parsed], dtype=torch.long)
            for attribute, index in self._value_index.items()
        }

    def score(self, frames: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_frames(frames, prompts)
        if self._fixed_frames is not None and frames.shape[1] != self._fixed_frames:
            raise RewardInputError(
                f"the toy evaluator takes {self._fixed_frames} frames per clip, got {frames.shape[1]}"
            )
        logits = self.classifier(self._resize(frames).to(self.dtype))
        total = frames.new_zeros(frames.shape[0], dtype=torch.float32)
        counted = torch.zeros_like(total)
        for attribute, index in self.targets(prompts).items():
            index = index.to(total.device)
            known = index >= 0
            log_probs = F.log_softmax(logits[attribute].float(), dim=-1)
            picked = log_probs.gather(1, index.clamp(min=0)[:, None])[:, 0]
            value = picked if self.mode == "log_prob" else picked.exp()
            total = total + torch.where(known, value, torch.zeros_like(value))
            counted = counted + known.float()
        return total / counted.clamp(min=1.0)

    def _resize(self, frames: torch.Tensor) -> torch.Tensor:
        size = getattr(self.classifier, "image_size", None)
        if size is None or tuple(frames.shape[-2:]) == tuple(size):
            return frames
        flat = F.interpolate(frames.flatten(0, 1).float(), size=tuple(size), mode="bilinear", antialias=True)
        return flat.view(*frames.shape[:2], *flat.shape[1:])
