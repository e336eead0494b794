"""The toy world: numbered, seed-determined captioned clips, in memory or written to disk.

Clip `i` of a world with seed `s` depends only on (s, i): its scene, caption, and whether and how
it is degraded each come from their own generator seeded by (s, i, stream), so any clip can be
regenerated alone, in any order or process, and the clean version of a degraded clip is
`world.clip(i, degradation=Degradation())`.

On disk (`make_dataset`), a world is `videos/<index>.mp4` plus `clips.csv` in the `path,text`
layout the training loader reads, with the ground-truth attributes as extra columns, and
`toyworld.json` holding the configuration that reproduces it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from hummingbird_t2v.data.sampling import frames_to_tensor
from hummingbird_t2v.data.video_io import write_video
from hummingbird_t2v.errors import ConfigError, HummingbirdError
from hummingbird_t2v.toyworld.captions import canonical_caption, paraphrase_caption
from hummingbird_t2v.toyworld.degradations import Degradation, apply_degradation
from hummingbird_t2v.toyworld.render import render_scene
from hummingbird_t2v.toyworld.scene import SceneSpec, SceneVocabulary, sample_scene

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "CSV_NAME",
    "MakeReport",
    "ToyClip",
    "ToyWorld",
    "ToyWorldConfig",
    "ToyWorldDataset",
    "ToyWorldError",
    "make_dataset",
]

CSV_NAME = "clips.csv"
CONFIG_NAME = "toyworld.json"
VIDEO_FOLDER = "videos"
FORMAT_VERSION = 1

# Ground truth per clip, in CSV column order. Second-object columns are empty for one object.
ATTRIBUTE_COLUMNS = (
    "index",
    "num_objects",
    "shape",
    "color",
    "size",
    "motion",
    "shape2",
    "color2",
    "size2",
    "motion2",
    "background",
    "background_color",
    "background_color2",
    "camera",
    "degradation",
    "degradation_strength",
)

# Independent random streams per clip (see the module docstring).
_SCENE_STREAM, _CAPTION_STREAM, _PICK_DEGRADATION_STREAM, _DEGRADE_STREAM = range(4)


class ToyWorldError(HummingbirdError):
    """A toy-world request that cannot be served (e.g. an output folder already in use)."""


@dataclass(frozen=True)
class ToyWorldConfig:
    height: int = 64
    width: int = 64
    num_frames: int = 16
    fps: int = 8
    seed: int = 0
    degraded_fraction: float = 0.0  # share of clips that come out degraded
    paraphrase: bool = True  # random synonyms and templates; False: canonical captions only
    vocabulary: SceneVocabulary = field(default_factory=SceneVocabulary)

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8:
            raise ConfigError(f"toy clips need at least 8x8 pixels, got {self.height}x{self.width}")
        if self.num_frames < 1 or self.fps < 1:
            raise ConfigError(f"need num_frames >= 1 and fps >= 1, got {self.num_frames} and {self.fps}")
        if self.seed < 0:
            raise ConfigError(f"the seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.degraded_fraction <= 1.0:
            raise ConfigError(f"degraded_fraction must lie in [0, 1], got {self.degraded_fraction}")
        if self.degraded_fraction > 0 and not self.vocabulary.degradations:
            raise ConfigError("degraded_fraction > 0 needs at least one degradation kind")


@dataclass(frozen=True)
class ToyClip:
    index: int
    frames: np.ndarray  # uint8 (T, H, W, 3)
    caption: str
    canonical_caption: str
    scene: SceneSpec
    degradation: Degradation
    fps: int

    @property
    def attributes(self) -> dict[str, Any]:
        """The ground truth, keyed by ATTRIBUTE_COLUMNS."""
        first = self.scene.objects[0]
        second = self.scene.objects[1] if len(self.scene.objects) > 1 else None
        background = self.scene.background
        return {
            "index": self.index,
            "num_objects": len(self.scene.objects),
            "shape": first.shape,
            "color": first.color,
            "size": first.size,
            "motion": first.motion,
            "shape2": second.shape if second else "",
            "color2": second.color if second else "",
            "size2": second.size if second else "",
            "motion2": second.motion if second else "",
            "background": background.kind,
            "background_color": background.color,
            "background_color2": background.color2,
            "camera": self.scene.camera.kind,
            "degradation": self.degradation.kind,
            "degradation_strength": round(self.degradation.strength, 4),
        }


class ToyWorld:
    """Clips by index: `ToyWorld(config).clip(17)` is the same clip on every machine."""

    def __init__(self, config: ToyWorldConfig | None = None) -> None:
        self.config = config if config is not None else ToyWorldConfig()

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        if index < 0:
            raise ConfigError(f"toy clip indices start at 0, got {index}")
        return np.random.default_rng([self.config.seed, index, stream])

    def scene(self, index: int) -> SceneSpec:
        aspect = self.config.width / self.config.height
        return sample_scene(self._rng(index, _SCENE_STREAM), self.config.vocabulary, aspect)

    def degradation(self, index: int) -> Degradation:
        """How clip `index` is degraded in this world (kind "none" for most clips)."""
        rng = self._rng(index, _PICK_DEGRADATION_STREAM)
        if rng.random() >= self.config.degraded_fraction:
            return Degradation()
        kinds = self.config.vocabulary.degradations
        # Strength from 0.3 up: weaker damage is hard to see at toy resolution.
        return Degradation(kinds[int(rng.integers(len(kinds)))], float(rng.uniform(0.3, 1.0)))

    def clip(self, index: int, *, degradation: Degradation | None = None) -> ToyClip:
        """Render clip `index`; `degradation` overrides the world's choice for it (e.g.
        `Degradation()` for the clean version, `Degradation("blur", 0.8)` for a blurred one)."""
        config = self.config
        scene = self.scene(index)
        frames = render_scene(scene, config.height, config.width, config.num_frames)
        chosen = self.degradation(index) if degradation is None else degradation
        if chosen.kind != "none":
            frames = apply_degradation(frames, chosen, self._rng(index, _DEGRADE_STREAM), fps=config.fps)
        canonical = canonical_caption(scene)
        caption = paraphrase_caption(scene, self._rng(index, _CAPTION_STREAM)) if config.paraphrase else canonical
        return ToyClip(index, frames, caption, canonical, scene, chosen, config.fps)

    def clips(self, count: int, start: int = 0) -> Iterator[ToyClip]:
        for index in range(start, start + count):
            yield self.clip(index)


class ToyWorldDataset(Dataset):
    """Clips `start` .. `start + size - 1` of a world as training samples, rendered on demand:
    {"video": float32 (C, T, H, W) in [-1, 1], "caption", "fps", "path": "toyworld:<seed>/<index>"}
    (the same keys as data.VideoClipDataset, so trainers take either)."""

    def __init__(self, world: ToyWorld, size: int, start: int = 0) -> None:
        if size < 1 or start < 0:
            raise ConfigError(f"need size >= 1 and start >= 0, got size={size}, start={start}")
        self.world = world
        self.size = size
        self.start = start

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not 0 <= item < self.size:
            raise IndexError(item)
        clip = self.world.clip(self.start + item)
        video: torch.Tensor = frames_to_tensor(clip.frames)
        return {
            "video": video,
            "caption": clip.caption,
            "fps": clip.fps,
            "path": f"toyworld:{self.world.config.seed}/{clip.index}",
        }


@dataclass(frozen=True)
class MakeReport:
    csv_path: Path
    num_clips: int
    render_seconds: float  # rendering + degradation
    write_seconds: float  # H.264 encoding and file writes

    @property
    def clips_per_second(self) -> float:
        return self.num_clips / max(self.render_seconds + self.write_seconds, 1e-9)

    @property
    def render_clips_per_second(self) -> float:
        return self.num_clips / max(self.render_seconds, 1e-9)


def _prepare_folder(out_dir: Path, overwrite: bool) -> Path:
    videos = out_dir / VIDEO_FOLDER
    existing = (out_dir / CSV_NAME).exists() or (videos.is_dir() and any(videos.iterdir()))
    if existing and not overwrite:
        raise ToyWorldError(f"{out_dir} already holds a toy dataset; choose another folder or pass --overwrite")
    if existing:
        # Only our own numbered clips, so stale ones from a larger earlier run do not linger.
        for stale in videos.glob("*.mp4"):
            if re.fullmatch(r"\d+\.mp4", stale.name):
                stale.unlink()
    videos.mkdir(parents=True, exist_ok=True)
    return videos


def _write_text_atomically(path: Path, write: Callable[[Any], None]) -> None:
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            write(stream)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def make_dataset(
    out_dir: str | os.PathLike[str],
    num_clips: int,
    config: ToyWorldConfig | None = None,
    *,
    crf: int = 10,
    pix_fmt: str = "yuv444p",
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MakeReport:
    """Write clips 0 .. num_clips-1 of the world as mp4 files plus clips.csv and toyworld.json.

    `progress` is called with 1 after each clip. The CSV is written last, so a folder with a
    CSV is complete. Colour is stored at full resolution (yuv444p) by default: with 4:2:0 the
    edges of a 64-pixel clip's small coloured shapes bleed by up to 100 grey levels; pass
    pix_fmt="yuv420p" for files every browser plays.
    """
    config = config if config is not None else ToyWorldConfig()
    if num_clips < 1:
        raise ConfigError(f"need at least one clip, got {num_clips}")
    if pix_fmt == "yuv420p" and (config.height % 2 or config.width % 2):
        raise ConfigError(f"yuv420p files need an even height and width, got {config.height}x{config.width}")
    out = Path(os.fspath(out_dir))
    _prepare_folder(out, overwrite)
    world = ToyWorld(config)
    digits = max(6, len(str(num_clips - 1)))
    rows: list[dict[str, Any]] = []
    render_seconds = write_seconds = 0.0
    for index in range(num_clips):
        started = time.perf_counter()
        clip = world.clip(index)
        rendered = time.perf_counter()
        relative = f"{VIDEO_FOLDER}/{index:0{digits}d}.mp4"
        write_video(out / relative, clip.frames, config.fps, crf=crf, pix_fmt=pix_fmt)
        render_seconds += rendered - started
        write_seconds += time.perf_counter() - rendered
        rows.append(
            {"path": relative, "text": clip.caption, "canonical_text": clip.canonical_caption, **clip.attributes}
        )
        if progress is not None:
            progress(1)

    settings = {
        "format_version": FORMAT_VERSION,
        "num_clips": num_clips,
        "crf": crf,
        "pix_fmt": pix_fmt,
        "config": asdict(config),
    }
    _write_text_atomically(out / CONFIG_NAME, lambda stream: json.dump(settings, stream, indent=2))

    def write_rows(stream: Any) -> None:
        writer = csv.DictWriter(stream, fieldnames=["path", "text", "canonical_text", *ATTRIBUTE_COLUMNS])
        writer.writeheader()
        writer.writerows(rows)

    _write_text_atomically(out / CSV_NAME, write_rows)
    return MakeReport(out / CSV_NAME, num_clips, render_seconds, write_seconds)
