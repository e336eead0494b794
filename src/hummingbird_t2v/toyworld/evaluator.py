"""The toy evaluator: a small video classifier that reads a clip's attributes back from its pixels.

Given a video made from a toy prompt, it predicts the first object's shape, colour, size and
motion, the camera move and the background kind; comparing those with the prompt's attributes
gives per-attribute accuracy, the toy world's answer to "does the model follow the prompt?".
Later issues use it to compare the teacher, pruned and distilled students.

Two convolution trunks read a clip of 8 frames spread evenly over it, at 64x64:
- the *motion trunk*, a (2+1)D stack (a spatial 3x3 then a temporal 3 convolution per stage, as
  R(2+1)D factorises 3D convolutions) from a full-resolution stem, averaged over time at the end;
- the *appearance trunk* (evaluators from 2026-11-26 on), a per-frame 2D stack: blocks of two 3x3
  convolutions and a 2x2 max pool, the same weights for every frame, pooled per frame and then
  averaged over the frames. Shape needs it: the motion trunk, which strides and averages over time
  early, never learned shapes (docs/toy-components.md).
Each trunk's last feature map is pooled (global mean and max, and the max of each quadrant) into
linear heads: position-free for shape and colour, while the quadrants keep which side an object is
on (the first object is the left one in two-object scenes). Shape, colour and size are read from the
appearance trunk, motion, camera and background from the motion trunk (an evaluator without an
appearance trunk reads everything from the motion trunk).
It is trained on rendered toy clips of the training world, 30 % of them degraded (blur, noise,
compression, frame drops, flicker) so that imperfect generated videos are still read.

Reproduce the shipped evaluator: its motion trunk is the previous evaluator's (two runs on the
shared 2-core CPU, 43 + 38 minutes), its appearance trunk trained 561 steps on one NVIDIA H200 with
half its clips from the core vocabulary (79 s); training.json records all three runs:
    python -m hummingbird_t2v.toyworld.evaluator --appearance-channels none --steps 1800 --out RUN1
    python -m hummingbird_t2v.toyworld.evaluator --init RUN1 --steps 1500 --lr 1e-3 --seed 1 --threads 1 --workers 1 --out RUN2
    python -m hummingbird_t2v.toyworld.evaluator --device cuda --workers 12 --batch-size 64 --steps 561 \
        --core-fraction 0.5 --out RUN3   # the run itself: --steps 4000 --max-minutes 1.583, cut to 561
    python -m hummingbird_t2v.toyworld.evaluator --init RUN3 --motion-trunk-from RUN2 --steps 0 \
        --out src/hummingbird_t2v/assets/toy/evaluator
(Adding `--motion-trunk-from RUN2` to the third command trains the appearance trunk alone and makes
the fourth unnecessary: the two trunks share no weights and no loss term, so only random draws differ.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    load_component,
    read_json,
    save_component,
    write_json,
)
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.eval.flicker import mean_temporal_flickering
from hummingbird_t2v.pipelines.hummingbird import to_uint8
from hummingbird_t2v.toyworld.captions import canonical_caption, paraphrase_caption
from hummingbird_t2v.toyworld.components import (
    ASSET_DIR,
    HELD_OUT_WORLD_SEED,
    TRAIN_WORLD_SEED,
    warmup_cosine_lr,
)
from hummingbird_t2v.toyworld.degradations import Degradation
from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.labels import (
    ATTRIBUTE_CLASSES,
    label_tensor,
    scene_attributes,
)
from hummingbird_t2v.toyworld.scene import SceneVocabulary, resolve_vocabulary
from hummingbird_t2v.toyworld.vocabulary import DEGRADATIONS

__all__ = [
    "EVALUATOR_ATTRIBUTES",
    "EVAL_WORLD_SEED",
    "TOY_EVALUATOR_DIR",
    "EvaluatorTraining",
    "RewardClassifier",
    "SavedEvalVideos",
    "ToyEvalResult",
    "ToyEvaluatorConfig",
    "ToyVideoClassifier",
    "accuracy_by_attribute",
    "chance_accuracy",
    "confusion_counts",
    "eval_scenes",
    "evaluate_pipeline",
    "evaluate_pipeline_videos",
    "evaluate_real_clips",
    "evaluate_videos",
    "format_confusion",
    "format_eval_table",
    "generate_eval_videos",
    "load_eval_videos",
    "load_reward_classifier",
    "load_toy_evaluator",
    "save_eval_videos",
    "score_videos",
    "train_toy_evaluator",
]

TOY_EVALUATOR_DIR = ASSET_DIR / "evaluator"
TRAINING_RECORD = "training.json"
EVALUATOR_ATTRIBUTES = ("shape", "color", "size", "motion", "camera", "background")
POOLED_PER_CHANNEL = 6  # what _pool keeps of each channel: global mean and max, 4 quadrant maxima


@dataclass(frozen=True)
class ToyEvaluatorConfig:
    num_frames: int = 8  # frames the network sees, spread evenly over any input clip
    height: int = 64
    width: int = 64
    stem_channels: int = 24  # full resolution: a small shape is only ~10 pixels wide
    stage_channels: tuple[int, ...] = (32, 64, 128)  # motion trunk; each stage halves height and width
    temporal_strides: tuple[int, ...] = (1, 2, 2)
    # Per-frame 2D trunk, one block (two 3x3 convolutions, 2x2 max pool) per entry; empty: none,
    # as in the evaluators before 2026-11-26 (from_dict reads their config.json, which has no such field).
    appearance_channels: tuple[int, ...] = (24, 48, 96, 128)
    appearance_attributes: tuple[str, ...] = ("shape", "color", "size")  # read from that trunk
    attributes: tuple[str, ...] = EVALUATOR_ATTRIBUTES
    dropout: float = 0.2

    def __post_init__(self) -> None:
        for key in ("stage_channels", "temporal_strides", "appearance_channels"):
            object.__setattr__(self, key, tuple(int(c) for c in getattr(self, key)))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        object.__setattr__(self, "appearance_attributes", tuple(self.appearance_attributes))
        if len(self.stage_channels) != len(self.temporal_strides) or not self.stage_channels:
            raise ConfigError("ToyEvaluatorConfig needs one temporal stride per stage and at least one stage")
        unknown = [a for a in (*self.attributes, *self.appearance_attributes) if a not in ATTRIBUTE_CLASSES]
        if unknown or not self.attributes:
            raise ConfigError(f"unknown evaluator attributes {unknown}; choose from {', '.join(ATTRIBUTE_CLASSES)}")
        reduction = 2 ** max(len(self.stage_channels), len(self.appearance_channels))
        if self.height % reduction or self.width % reduction or self.num_frames % math.prod(self.temporal_strides):
            raise ConfigError(f"evaluator input {self.num_frames}x{self.height}x{self.width} does not divide by its strides")

    def reads_appearance(self, attribute: str) -> bool:
        """Whether `attribute` is read from the per-frame appearance trunk."""
        return bool(self.appearance_channels) and attribute in self.appearance_attributes

    @property
    def pooled_features(self) -> int:
        """Width of the motion-trunk heads' input: global mean and max, plus the max of each frame quadrant."""
        return self.stage_channels[-1] * POOLED_PER_CHANNEL

    @property
    def appearance_features(self) -> int:
        return self.appearance_channels[-1] * POOLED_PER_CHANNEL if self.appearance_channels else 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("stage_channels", "temporal_strides", "appearance_channels", "appearance_attributes", "attributes"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyEvaluatorConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ToyEvaluatorConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**{"appearance_channels": (), **data})


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel, stride, padding, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def _pool(features: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n, 6c): global mean and max, and the max of each quadrant. Pooling makes
    shape and colour independent of where the object is; the quadrant maxima keep which side an
    object is on (the first object of a two-object scene is the left one)."""
    return torch.cat([features.mean((2, 3)), features.amax((2, 3)), F.adaptive_max_pool2d(features, 2).flatten(1)], dim=1)


class ToyVideoClassifier(nn.Module):
    """Video (b, 3, num_frames, height, width) in [-1, 1] -> logits per attribute."""

    def __init__(self, config: ToyEvaluatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or ToyEvaluatorConfig()
        c = self.config
        layers = [_conv_bn_relu(3, c.stem_channels, (1, 3, 3), (1, 1, 1))]
        width = c.stem_channels
        for channels, temporal_stride in zip(c.stage_channels, c.temporal_strides, strict=True):
            layers.append(_conv_bn_relu(width, channels, (1, 3, 3), (1, 2, 2)))
            layers.append(_conv_bn_relu(channels, channels, (3, 1, 1), (temporal_stride, 1, 1)))
            width = channels
        self.features = nn.Sequential(*layers)
        # Kernels (1, 3, 3) over (b, c, t, h, w): the same 2D network on every frame.
        appearance: list[nn.Module] = []
        width = 3
        for channels in c.appearance_channels:
            appearance += [
                _conv_bn_relu(width, channels, (1, 3, 3), (1, 1, 1)),
                _conv_bn_relu(channels, channels, (1, 3, 3), (1, 1, 1)),
                nn.MaxPool3d((1, 2, 2)),
            ]
            width = channels
        self.appearance = nn.Sequential(*appearance) if appearance else None
        self.dropout = nn.Dropout(c.dropout)
        self.heads = nn.ModuleDict({
            name: nn.Linear(c.appearance_features if c.reads_appearance(name) else c.pooled_features, len(ATTRIBUTE_CLASSES[name]))
            for name in c.attributes
        })

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        expected = (3, c.num_frames, c.height, c.width)
        if video.ndim != 5 or tuple(video.shape[1:]) != expected:
            raise ConfigError(f"the evaluator takes videos (b, {', '.join(map(str, expected))}), got {tuple(video.shape)}; use prepare()")
        motion = self.dropout(_pool(self.features(video).mean(2)))  # (b, c, h, w): motion is in the channels by now
        appearance = None
        if self.appearance is not None:
            frames = self.appearance(video)  # (b, c, t, h, w)
            b, t = frames.shape[0], frames.shape[2]
            per_frame = _pool(frames.transpose(1, 2).flatten(0, 1)).unflatten(0, (b, t))
            appearance = self.dropout(per_frame.mean(1))
        return {name: head(appearance if c.reads_appearance(name) else motion) for name, head in self.heads.items()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Videos (b, T, H, W, 3), uint8 or floats in [0, 1], any T >= 1 and size -> the network's input.

        Frames are taken evenly over the clip (nearest index) and resized with area averaging.
        """
        video = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if video.ndim != 5 or video.shape[-1] != 3 or video.shape[1] < 1:
            raise ConfigError(f"videos must have the layout (b, T, H, W, 3), got shape {tuple(video.shape)}")
        video = video.float() / 255.0 if video.dtype == torch.uint8 else video.float().clamp(0, 1)
        c = self.config
        picks = torch.linspace(0, video.shape[1] - 1, c.num_frames).round().long()
        video = video[:, picks].permute(0, 1, 4, 2, 3)  # (b, t, 3, H, W)
        b, t = video.shape[:2]
        if video.shape[-2:] != (c.height, c.width):
            video = F.interpolate(video.flatten(0, 1), size=(c.height, c.width), mode="area").unflatten(0, (b, t))
        return (video.permute(0, 2, 1, 3, 4) * 2 - 1).contiguous().to(self.device)

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor, batch_size: int = 32) -> list[dict[str, str]]:
        """Attribute values per video, e.g. [{"shape": "circle", "color": "red", ...}, ...]."""
        was_training = self.training
        self.eval()
        predictions: list[dict[str, str]] = []
        for start in range(0, len(frames), batch_size):
            logits = self(self.prepare(frames[start : start + batch_size]))
            indices = {name: value.argmax(-1).tolist() for name, value in logits.items()}
            for row in range(len(next(iter(indices.values())))):
                predictions.append({name: ATTRIBUTE_CLASSES[name][indices[name][row]] for name in logits})
        self.train(was_training)
        return predictions


def correct_by_attribute(predictions: Sequence[Mapping[str, str]], attributes: Sequence[Mapping[str, Any]]) -> dict[str, list[bool]]:
    """Per attribute, whether the evaluator read each video as asked (a missing ground truth is "none")."""
    if len(predictions) != len(attributes) or not predictions:
        raise ConfigError(f"need one ground-truth attribute set per video, got {len(attributes)} for {len(predictions)} videos")
    return {
        name: [(str(truth.get(name, "")) or "none") == guess[name] for guess, truth in zip(predictions, attributes, strict=True)]
        for name in predictions[0]
    }


def accuracy_by_attribute(predictions: Sequence[Mapping[str, str]], attributes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    return {name: float(np.mean(right)) for name, right in correct_by_attribute(predictions, attributes).items()}


def confusion_counts(
    predictions: Sequence[Mapping[str, str]], attributes: Sequence[Mapping[str, Any]], name: str
) -> dict[str, dict[str, int]]:
    """For one attribute: asked value -> value the evaluator read -> number of videos."""
    if name not in EVALUATOR_ATTRIBUTES:
        raise ConfigError(f"the toy evaluator reads no attribute {name!r}; choose one of {list(EVALUATOR_ATTRIBUTES)}")
    if len(predictions) != len(attributes):
        raise ConfigError(f"need one ground-truth attribute set per video, got {len(attributes)} for {len(predictions)} videos")
    counts: dict[str, dict[str, int]] = {}
    for guess, truth in zip(predictions, attributes, strict=True):
        asked = str(truth.get(name, "")) or "none"
        row = counts.setdefault(asked, {})
        row[guess[name]] = row.get(guess[name], 0) + 1
    return counts


def format_confusion(counts: Mapping[str, Mapping[str, int]], name: str) -> str:
    """Rows: the asked values; columns: the values read (those that occur), in the class order."""
    order = ATTRIBUTE_CLASSES[name]
    asked = [value for value in order if value in counts]
    read = [value for value in order if any(value in row for row in counts.values())]
    headers = [f"{name}: asked \\ read", *read, "correct"]
    rows = []
    for value in asked:
        row = counts[value]
        total = sum(row.values())
        rows.append([value, *(str(row.get(r, 0)) for r in read), f"{row.get(value, 0)}/{total}"])
    return "\n".join(align_columns(headers, rows))


def align_columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Text table lines: the first column left-aligned, the others right-aligned (counts, percentages)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return [
        "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [headers, *rows]
    ]


def chance_accuracy(name: str) -> float:
    """Accuracy of guessing uniformly among an attribute's values (the toy world draws most of them
    uniformly; the camera is 'still' for 75 % of clips, so always guessing that would score 75 %)."""
    return 1.0 / len(ATTRIBUTE_CLASSES[name])


def evaluate_videos(
    frames_batch: np.ndarray | torch.Tensor,
    attributes: Sequence[Mapping[str, Any]],
    evaluator: ToyVideoClassifier | None = None,
) -> dict[str, float]:
    """Per-attribute accuracy of the evaluator on videos (b, T, H, W, 3) against their ground truth
    (`ToyClip.attributes` or `labels.scene_attributes` dicts); the shipped evaluator by default."""
    evaluator = evaluator if evaluator is not None else load_toy_evaluator()
    return accuracy_by_attribute(evaluator.predict(frames_batch), attributes)


def load_toy_evaluator(folder: Path = TOY_EVALUATOR_DIR, *, device: torch.device | str = "cpu") -> ToyVideoClassifier:
    folder = Path(folder)
    read_json(folder / CONFIG_NAME)  # a clear error if the folder is not a component
    model = load_component(folder, lambda data: ToyVideoClassifier(ToyEvaluatorConfig.from_dict(data)), device=device)
    return model.eval()


class RewardClassifier(nn.Module):
    """The evaluator in the form the toy reward (rewards/toy.py) calls it: frames (b, T, 3, H, W)
    in [0, 1], differentiable in the frames, frozen and always in eval mode (batch norm must not
    learn the statistics of a student's half-trained videos)."""

    def __init__(self, classifier: ToyVideoClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        config = classifier.config
        self.attribute_values = {name: ATTRIBUTE_CLASSES[name] for name in config.attributes}
        self.num_frames = config.num_frames
        self.image_size = (config.height, config.width)

    def train(self, mode: bool = True) -> RewardClassifier:
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classifier(frames.permute(0, 2, 1, 3, 4) * 2 - 1)


def load_reward_classifier(weights_path: str | Path | None = None) -> RewardClassifier:
    """The toy reward's classifier: the evaluator in `weights_path` (a folder), or the shipped one."""
    return RewardClassifier(load_toy_evaluator(Path(weights_path) if weights_path is not None else TOY_EVALUATOR_DIR))


# --------------------------------------------------------------------- evaluating a model
EVAL_WORLD_SEED = 2  # prompts and real clips for `toyworld eval`: a world no component trained on
CaptionStyle = Literal["canonical", "paraphrase"]


@dataclass(frozen=True)
class ToyEvalResult:
    """Per-attribute accuracy and VBench temporal flickering of one set of videos."""

    source: str  # "real clips" or the model that generated them
    count: int
    accuracy: dict[str, float]
    temporal_flickering: float
    seconds: float


def eval_scenes(
    count: int,
    world_seed: int = EVAL_WORLD_SEED,
    captions: CaptionStyle = "canonical",
    vocabulary: SceneVocabulary | str | None = None,
) -> tuple[ToyWorld, list[str], list[dict[str, Any]]]:
    """The world, prompts and ground truth of the first `count` scenes of the evaluation world
    (drawn from `vocabulary`: a preset name such as "core", default the whole toy world)."""
    if count < 1:
        raise ConfigError(f"evaluate at least one video, got --n {count}")
    if captions not in ("canonical", "paraphrase"):
        raise ConfigError(f"captions must be 'canonical' or 'paraphrase', got {captions!r}")
    world = ToyWorld(ToyWorldConfig(seed=world_seed, paraphrase=captions == "paraphrase", vocabulary=resolve_vocabulary(vocabulary)))
    prompts, attributes = [], []
    for index in range(count):
        scene = world.scene(index)
        rng = np.random.default_rng([world_seed, index, 5])
        prompts.append(paraphrase_caption(scene, rng) if captions == "paraphrase" else canonical_caption(scene))
        attributes.append(scene_attributes(scene))
    return world, prompts, attributes


def evaluate_real_clips(
    count: int,
    *,
    world_seed: int = EVAL_WORLD_SEED,
    vocabulary: SceneVocabulary | str | None = None,
    evaluator: ToyVideoClassifier | None = None,
) -> ToyEvalResult:
    """The evaluator on clean rendered clips of the evaluation scenes: the ceiling for a model."""
    started = time.perf_counter()
    evaluator = evaluator if evaluator is not None else load_toy_evaluator()
    world, _, attributes = eval_scenes(count, world_seed, vocabulary=vocabulary)
    videos = np.stack([world.clip(i, degradation=Degradation()).frames for i in range(count)])
    return score_videos("real clips", videos, attributes, evaluator=evaluator, seconds=time.perf_counter() - started)


def generate_eval_videos(
    pipe: Any,
    prompts: Sequence[str],
    *,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    prior_strength: float | None = None,
) -> np.ndarray:
    """One video per prompt from `pipe` (a HummingbirdPipeline), as 8-bit frames (n, T, H, W, 3),
    the way they would be saved. The same seed gives every model the same starting noise."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    videos = []
    for start in range(0, len(prompts), batch_size):
        output = pipe(
            list(prompts[start : start + batch_size]),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            prior_strength=prior_strength,
            output_type="np",
            progress=False,
        )
        videos.append(to_uint8(output.frames))
        if progress is not None:
            progress(len(output.frames))
    return np.concatenate(videos)


def score_videos(
    source: str, videos: np.ndarray, attributes: Sequence[Mapping[str, Any]], *, evaluator: ToyVideoClassifier | None = None, seconds: float = 0.0
) -> ToyEvalResult:
    """Per-attribute accuracy of `videos` against the scenes they were asked for, plus flicker."""
    evaluator = evaluator if evaluator is not None else load_toy_evaluator()
    accuracy = accuracy_by_attribute(evaluator.predict(videos), attributes)
    return ToyEvalResult(source, len(videos), accuracy, mean_temporal_flickering(videos), seconds)


@dataclass(frozen=True)
class SavedEvalVideos:
    """Generated evaluation videos with what they were asked for, as `--save-videos` stores them."""

    source: str
    videos: np.ndarray  # uint8 (n, T, H, W, 3)
    prompts: list[str]
    attributes: list[dict[str, Any]]
    world_seed: int
    vocabulary: SceneVocabulary


def save_eval_videos(path: str | Path, saved: SavedEvalVideos) -> Path:
    """Write generated evaluation videos and their prompts and ground truth to an .npz file
    (atomically), so that another evaluator can score the same videos without generating them
    again (`hummingbird toyworld eval --videos FILE`)."""
    from hummingbird_t2v.checkpoints.folder import _atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"saved evaluation videos go to an .npz file, got {str(path)!r}")
    _check_saved(saved, str(path))
    meta = {
        "source": saved.source,
        "prompts": list(saved.prompts),
        "attributes": [dict(a) for a in saved.attributes],
        "world_seed": int(saved.world_seed),
        "vocabulary": asdict(saved.vocabulary),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: given a name, numpy would append ".npz" to the temporary one
            np.savez_compressed(handle, videos=saved.videos, meta=np.array(json.dumps(meta)))

    _atomic_write(path, write)
    return path


def load_eval_videos(path: str | Path) -> SavedEvalVideos:
    """What `save_eval_videos` wrote (read without unpickling anything)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no saved evaluation videos at {str(path)!r}; write them with `hummingbird toyworld eval --save-videos FILE.npz`")
    try:
        with np.load(path, allow_pickle=False) as data:
            videos, meta = data["videos"], json.loads(str(data["meta"]))
        saved = SavedEvalVideos(
            source=str(meta["source"]),
            videos=videos,
            prompts=list(meta["prompts"]),
            attributes=list(meta["attributes"]),
            world_seed=int(meta["world_seed"]),
            vocabulary=resolve_vocabulary(meta["vocabulary"]),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ConfigError(f"{str(path)!r} is not a file of saved evaluation videos ({error}); write one with --save-videos") from None
    _check_saved(saved, str(path))
    return saved


def _check_saved(saved: SavedEvalVideos, where: str) -> None:
    videos = saved.videos
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3 or not len(videos) == len(saved.prompts) == len(saved.attributes):
        raise ConfigError(
            f"{where}: saved evaluation videos must be uint8 (n, T, H, W, 3) with one prompt and one attribute set each, "
            f"got {videos.shape} ({videos.dtype}) for {len(saved.prompts)} prompts"
        )


def evaluate_pipeline(pipe: Any, count: int, **options: Any) -> ToyEvalResult:
    """Generate one video per evaluation prompt with `pipe` (a HummingbirdPipeline) and score them
    (the options of `evaluate_pipeline_videos`)."""
    return evaluate_pipeline_videos(pipe, count, **options)[0]


def evaluate_pipeline_videos(
    pipe: Any,
    count: int,
    *,
    source: str = "generated",
    world_seed: int = EVAL_WORLD_SEED,
    captions: CaptionStyle = "canonical",
    vocabulary: SceneVocabulary | str | None = None,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    batch_size: int = 8,
    evaluator: ToyVideoClassifier | None = None,
    progress: Callable[[int], None] | None = None,
    prior_strength: float | None = None,
) -> tuple[ToyEvalResult, SavedEvalVideos]:
    """`evaluate_pipeline`, also returning the videos with their prompts (for `save_eval_videos`).

    Videos are generated at the pipeline's default size and read back as 8-bit frames, as they
    would be saved; the evaluator resamples them to its own input size."""
    started = time.perf_counter()
    _, prompts, attributes = eval_scenes(count, world_seed, captions, vocabulary)
    videos = generate_eval_videos(
        pipe,
        prompts,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        prior_strength=prior_strength,
    )
    result = score_videos(source, videos, attributes, evaluator=evaluator, seconds=time.perf_counter() - started)
    return result, SavedEvalVideos(source, videos, prompts, attributes, world_seed, resolve_vocabulary(vocabulary))


def format_eval_table(results: Sequence[ToyEvalResult]) -> str:
    """Attributes as rows, one accuracy column per result, chance level first; flicker last."""
    if not results:
        raise ConfigError("nothing to tabulate")
    names = list(results[0].accuracy)
    headers = ["attribute", "chance", *(f"{r.source} (n={r.count})" for r in results)]
    rows = [[name, f"{100 * chance_accuracy(name):.1f}%", *(f"{100 * r.accuracy[name]:.1f}%" for r in results)] for name in names]
    rows.append(["temporal flickering", "", *(f"{r.temporal_flickering:.4f}" for r in results)])
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class EvaluatorTraining:
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    degraded_fraction: float = 0.3
    # Share of clips drawn from the core vocabulary (one medium or large object, solid background,
    # still camera) instead of the whole toy world; 1.0 trains an evaluator for core models only.
    # docs/toy-components.md has what it did (0.5 let the appearance trunk learn shape).
    core_fraction: float = 0.0
    # A time budget: after the warm-up, the step count is cut to what fits (the cosine schedule
    # follows the new count). None: train all `steps`.
    max_minutes: float | None = None
    train_clips: int = 200_000  # clip indices of the training world (effectively never repeated)
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    workers: int = 0  # DataLoader processes rendering clips (0: in the training process)
    init: str | None = None  # an evaluator folder to continue from (None: from scratch)
    # An evaluator folder whose motion trunk (and the heads it feeds) is copied in and kept frozen,
    # so that only the appearance trunk trains (the two share no weights and no loss term).
    motion_trunk_from: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.core_fraction <= 1.0:
            raise ConfigError(f"core_fraction must lie in [0, 1], got {self.core_fraction}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be positive, got {self.max_minutes}")


class _TrainingClips(torch.utils.data.IterableDataset):
    """Endless batches of random training-world clips: (uint8 frames (b, T, H, W, 3), labels per
    attribute). Each DataLoader worker renders its own stream, seeded by (seed, worker)."""

    def __init__(self, config: EvaluatorTraining, names: Sequence[str]) -> None:
        super().__init__()
        self.config, self.names = config, tuple(names)

    def __iter__(self):  # type: ignore[override]
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.config.seed, info.id if info is not None else 0])
        worlds = [
            ToyWorld(ToyWorldConfig(seed=TRAIN_WORLD_SEED, degraded_fraction=self.config.degraded_fraction, vocabulary=vocabulary))
            for vocabulary in (resolve_vocabulary(None), resolve_vocabulary("core"))
        ]
        while True:
            indices = rng.integers(self.config.train_clips, size=self.config.batch_size)
            # Drawn only when asked for, so that the default keeps the stream the shipped evaluator trained on.
            from_core = rng.random(len(indices)) < self.config.core_fraction if self.config.core_fraction > 0 else np.zeros(len(indices), bool)
            clips = [worlds[int(core)].clip(int(i)) for i, core in zip(indices, from_core, strict=True)]
            yield torch.from_numpy(np.stack([clip.frames for clip in clips])), label_tensor([clip.attributes for clip in clips], self.names)


def adopt_motion_trunk(model: ToyVideoClassifier, source: ToyVideoClassifier) -> list[str]:
    """Copy `source`'s motion trunk and the heads it feeds (the attributes `model` does not read
    from its appearance trunk) into `model`, frozen; returns those attributes."""
    mine, theirs = model.config, source.config
    layout = ("num_frames", "height", "width", "stem_channels", "stage_channels", "temporal_strides")
    differ = [key for key in layout if getattr(mine, key) != getattr(theirs, key)]
    if differ:
        raise ConfigError(f"the motion trunk to adopt has another layout ({', '.join(differ)} differ); "
                          "adopt one from an evaluator with the same motion-trunk config")
    adopted = [name for name in mine.attributes if not mine.reads_appearance(name)]
    unread = [name for name in adopted if name not in source.heads or theirs.reads_appearance(name)]
    if unread:
        raise ConfigError(f"the evaluator to adopt the motion trunk from does not read {unread} from it")
    model.features.load_state_dict(source.features.state_dict())
    for name in adopted:
        model.heads[name].load_state_dict(source.heads[name].state_dict())
    for module in (model.features, *(model.heads[name] for name in adopted)):
        module.requires_grad_(False)
    return adopted


def train_toy_evaluator(
    config: EvaluatorTraining | None = None,
    model_config: ToyEvaluatorConfig | None = None,
    *,
    log: Callable[..., None] | None = print,
) -> tuple[ToyVideoClassifier, dict[str, Any]]:
    """Train on clips of the training world (from scratch, or on from `config.init`); returns the
    model and its held-out accuracies."""
    config = config or EvaluatorTraining()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = (load_toy_evaluator(Path(config.init)) if config.init else ToyVideoClassifier(model_config)).to(device)
    if config.motion_trunk_from:
        adopt_motion_trunk(model, load_toy_evaluator(Path(config.motion_trunk_from), device=device))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable and config.steps > 0:
        raise ConfigError("nothing to train: the adopted motion trunk is the whole evaluator; train 0 steps or add an appearance trunk")
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay) if trainable else None
    names = model.config.attributes
    # Rendering is plain Python: on a GPU host, workers keep the device fed.
    batches = iter(torch.utils.data.DataLoader(_TrainingClips(config, names), batch_size=None, num_workers=config.workers))
    started = time.perf_counter()
    recent: list[float] = []
    total_steps = config.steps
    model.train()
    if config.motion_trunk_from:
        model.features.eval()  # frozen: its batch-norm statistics stay as adopted
    step = 0
    while step < total_steps:
        if config.max_minutes is not None and step == max(config.warmup_steps, 1):  # measured over at least one step
            seconds_per_step = (time.perf_counter() - started) / step
            total_steps = max(step + 1, min(total_steps, int(config.max_minutes * 60 / seconds_per_step)))
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step, config.learning_rate, total_steps, config.warmup_steps)
        frames, labels = next(batches)
        logits = model(model.prepare(frames))
        loss = sum(F.cross_entropy(logits[name], labels[name].to(device)) for name in names)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        step += 1
        if log is not None and step % 100 == 0:
            log(f"evaluator step {step}/{total_steps}  loss {np.mean(recent):.3f}  {time.perf_counter() - started:.0f}s", flush=True)
    del batches  # stops the workers
    train_seconds = time.perf_counter() - started
    model.eval()
    record = {
        "training": asdict(config),
        "steps_trained": total_steps,
        "train_seconds": train_seconds,
        "final_loss": float(np.mean(recent)) if recent else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out_accuracy": held_out_accuracy(model),
    }
    # The records of the evaluators this one came from, so that its training.json tells its whole history.
    for key, folder in (("continued_from", config.init), ("motion_trunk_adopted_from", config.motion_trunk_from)):
        if folder and (Path(folder) / TRAINING_RECORD).is_file():
            record[key] = read_json(Path(folder) / TRAINING_RECORD)
    return model.cpu(), record


def held_out_accuracy(model: ToyVideoClassifier, count: int = 500, degraded_count: int = 100) -> dict[str, dict[str, float]]:
    """Accuracy on clean clips of the held-out world and on clips under each degradation (strength 0.6)."""
    world = ToyWorld(ToyWorldConfig(seed=HELD_OUT_WORLD_SEED))
    results = {}
    for kind, number in (("clean", count), *((kind, degraded_count) for kind in DEGRADATIONS)):
        degradation = Degradation() if kind == "clean" else Degradation(kind, 0.6)
        clips = [world.clip(i, degradation=degradation) for i in range(number)]
        predictions = model.predict(np.stack([clip.frames for clip in clips]))
        results[kind] = accuracy_by_attribute(predictions, [clip.attributes for clip in clips])
    return results


def save_toy_evaluator(model: ToyVideoClassifier, folder: Path, record: dict[str, Any]) -> None:
    save_component(folder, model, model.config.to_dict())
    write_json(Path(folder) / TRAINING_RECORD, {**record, "command": "python -m hummingbird_t2v.toyworld.evaluator"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hummingbird_t2v.toyworld.evaluator", description="Train the toy evaluator.")
    parser.add_argument("--out", default=str(TOY_EVALUATOR_DIR), help="output folder (default: the shipped asset)")
    parser.add_argument("--steps", type=int, default=EvaluatorTraining.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=EvaluatorTraining.batch_size)
    parser.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    parser.add_argument("--workers", type=int, default=0, help="processes rendering training clips (default 0)")
    parser.add_argument("--init", default=None, help="evaluator folder to continue training from")
    parser.add_argument("--lr", type=float, default=EvaluatorTraining.learning_rate, help="peak learning rate")
    parser.add_argument("--core-fraction", type=float, default=EvaluatorTraining.core_fraction,
                        help="share of training clips from the core vocabulary (default 0)")
    parser.add_argument("--motion-trunk-from", default=None,
                        help="evaluator folder whose motion trunk (motion, camera, background) is copied in and frozen")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="time budget: after the warm-up, cut the steps to what fits (default: train all --steps)")
    parser.add_argument("--appearance-channels", default=",".join(map(str, ToyEvaluatorConfig.appearance_channels)),
                        help="widths of the per-frame appearance trunk's blocks, comma-separated; 'none' for no such trunk "
                             "(default %(default)s)")
    args = parser.parse_args(argv)
    try:
        appearance = () if args.appearance_channels.strip().lower() == "none" else tuple(int(c) for c in args.appearance_channels.split(","))
    except ValueError:
        parser.error(f"--appearance-channels takes comma-separated integers or 'none', got {args.appearance_channels!r}")
    training = EvaluatorTraining(steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                                 device=args.device, workers=args.workers, init=args.init, learning_rate=args.lr,
                                 core_fraction=args.core_fraction, max_minutes=args.max_minutes,
                                 motion_trunk_from=args.motion_trunk_from)
    model, record = train_toy_evaluator(training, ToyEvaluatorConfig(appearance_channels=appearance))
    save_toy_evaluator(model, Path(args.out), record)
    print(f"saved {args.out}: {record['parameters'] / 1e3:.0f} K parameters, trained {record['train_seconds'] / 60:.1f} min")
    for kind, accuracies in record["held_out_accuracy"].items():
        print(f"  {kind:12s} " + "  ".join(f"{name} {100 * value:5.1f}" for name, value in accuracies.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
