"""The trainer's data stream: per-rank shards, fixed-size batches, an exact position for resume.

Every rank reads an endless stream of clip positions 0, 1, 2, ... Position p of rank r is clip
`order_e[r + world_size * k]` of epoch e = p // shard_size, k = p % shard_size, where order_e is a
permutation seeded by (shuffle_seed, e) that all ranks compute alike and shard_size =
len(dataset) // world_size. So within an epoch the ranks' clips are disjoint (unlike the
official loaders, spec §8.11), every rank takes the same number of steps, and the stream is a
pure function of the position: resuming at position P reproduces the rest of the run exactly,
whatever the number of DataLoader workers.

A clip that fails to decode is logged with its path, counted, and replaced by the next clip of
the same shard, so batches keep their size and ranks stay in lockstep.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hummingbird_t2v.data.manifest import DatasetError
from hummingbird_t2v.data.sampling import ClipTooShortError, FrameSampling
from hummingbird_t2v.data.video_dataset import VideoClipDataset
from hummingbird_t2v.data.video_io import VideoDecodeError
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.training.config import DataConfig

__all__ = [
    "ClipSource",
    "MapSource",
    "ShardedBatches",
    "VideoSource",
    "batch_loader",
    "build_source",
]

logger = logging.getLogger(__name__)


class ClipSource(Protocol):
    """Random access to clips: {"video": (C, T, H, W) in [-1, 1], "caption", "fps", "path"}."""

    failures: tuple[type[Exception], ...]  # errors meaning "this clip is unusable, skip it"

    def __len__(self) -> int: ...

    def sample(self, index: int, epoch: int) -> dict[str, Any]: ...


class MapSource:
    """Any map-style dataset (e.g. toyworld.ToyWorldDataset); its clips do not depend on the epoch."""

    failures: tuple[type[Exception], ...] = ()

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, epoch: int) -> dict[str, Any]:
        return self.dataset[index]


class VideoSource:
    """Video files through data.VideoClipDataset; the random stride and start depend on (epoch, index)."""

    failures = (VideoDecodeError, ClipTooShortError)

    def __init__(self, dataset: VideoClipDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.records)

    def sample(self, index: int, epoch: int) -> dict[str, Any]:
        return self.dataset.load_clip(index, epoch)


def _frame_sampling(config: DataConfig) -> FrameSampling:
    return FrameSampling(
        video_length=config.video_length,
        frame_stride=config.frame_stride,
        random_stride=config.random_stride,
        head_skip=config.head_skip,
        height=config.height,
        width=config.width,
        fixed_fps=config.fixed_fps,
    )


def _toyworld_source(config: DataConfig) -> MapSource:
    # Imported by name: the toy world sits above training in the package layering (it renders
    # clips with its own generator); the trainer only needs its map-style dataset.
    generator = importlib.import_module("hummingbird_t2v.toyworld.generator")
    scene = importlib.import_module("hummingbird_t2v.toyworld.scene")
    options = dict(config.toyworld)
    size = options.pop("size", None)
    start = options.pop("start", 0)
    if not isinstance(size, int) or size < 1:
        raise ConfigError("data.toyworld.size must give the number of toy clips to train on (e.g. 2000)")
    if "vocabulary" in options:
        options["vocabulary"] = scene.resolve_vocabulary(options["vocabulary"])
    for key in ("height", "width", "num_frames"):
        if key in options:
            raise ConfigError(f"data.toyworld.{key} is set by data.height / data.width / data.video_length instead")
    try:
        world_config = generator.ToyWorldConfig(
            height=config.height,
            width=config.width,
            num_frames=config.video_length,
            **options,
        )
    except TypeError as error:
        raise ConfigError(f"data.toyworld has an unknown field ({error})") from None
    return MapSource(generator.ToyWorldDataset(generator.ToyWorld(world_config), size, start))


def build_source(config: DataConfig) -> ClipSource:
    if config.kind == "toyworld":
        return _toyworld_source(config)
    dataset = VideoClipDataset.from_source(config.source, _frame_sampling(config), data_root=config.data_root)
    return VideoSource(dataset)


@dataclass(frozen=True)
class _Slot:
    epoch: int
    offset: int  # position within this rank's shard


class ShardedBatches(Dataset):
    """Map-style dataset of whole batches: item n is micro-batch n of this rank's stream.

    Items are collated dicts: "video" (B, C, T, H, W) float, "fps" (B,) int64, "caption" and
    "path" lists of B strings, and "skipped" the paths of unusable clips replaced in it.
    """

    def __init__(
        self,
        source: ClipSource,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle_seed: int = 0,
        max_consecutive_failures: int = 50,
    ) -> None:
        if len(source) < world_size:
            raise ConfigError(f"the dataset has {len(source)} clips, fewer than the {world_size} processes; add clips")
        self.source = source
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle_seed = shuffle_seed
        self.max_consecutive_failures = max_consecutive_failures
        # Equal shards (the remainder of each epoch is dropped) keep the ranks in lockstep.
        self.shard_size = len(source) // world_size

    def __len__(self) -> int:
        # The stream is endless; DataLoader only needs a length for its own bookkeeping.
        return 2**62

    @lru_cache(maxsize=2)  # noqa: B019 - a handful of epochs per object, freed with it
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.source))

    def clip_index(self, slot: _Slot) -> int:
        return int(self._order(slot.epoch)[self.rank + self.world_size * slot.offset])

    def slot(self, position: int) -> _Slot:
        return _Slot(position // self.shard_size, position % self.shard_size)

    def shard(self, epoch: int) -> list[int]:
        """The clip indices this rank reads in `epoch`, in order."""
        return [self.clip_index(_Slot(epoch, k)) for k in range(self.shard_size)]

    def _load(self, position: int, skipped: list[str]) -> dict[str, Any]:
        slot = self.slot(position)
        for attempt in range(self.max_consecutive_failures):
            # Replacement clips come from the same shard and epoch, so no other rank reads them now.
            index = self.clip_index(_Slot(slot.epoch, (slot.offset + attempt) % self.shard_size))
            try:
                return self.source.sample(index, slot.epoch)
            except self.source.failures as error:
                logger.warning("skipping unusable clip %d: %s", index, error)
                skipped.append(str(error))
        raise DatasetError(
            f"{self.max_consecutive_failures} clips in a row could not be used (see the warnings above); "
            "check the dataset's files or raise data.max_consecutive_failures"
        )

    def __getitem__(self, batch_number: int) -> dict[str, Any]:
        skipped: list[str] = []
        first = batch_number * self.batch_size
        samples = [self._load(first + i, skipped) for i in range(self.batch_size)]
        videos = [torch.as_tensor(s["video"], dtype=torch.float32) for s in samples]
        shapes = {tuple(v.shape) for v in videos}
        if len(shapes) > 1:
            raise DatasetError(f"clips of one batch have different shapes {sorted(shapes)}; set a fixed clip size")
        return {
            "video": torch.stack(videos),
            "fps": torch.tensor([int(s["fps"]) for s in samples], dtype=torch.long),
            "caption": [str(s["caption"]) for s in samples],
            "path": [str(s.get("path", "")) for s in samples],
            "skipped": skipped,
        }


class _CountFrom:
    """Batch numbers start, start + 1, ... (a DataLoader sampler)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        n = self.start
        while True:
            yield n
            n += 1


def _already_collated(item: dict[str, Any]) -> dict[str, Any]:
    return item


def batch_loader(
    batches: ShardedBatches,
    start: int,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict[str, Any]]:
    """Iterate micro-batches `start`, `start + 1`, ... (workers prefetch ahead; the position that
    counts for resume is what the trainer has consumed)."""
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=_CountFrom(start),
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_already_collated,
        # Its own generator: creating the iterator draws a worker seed, which must not come from the
        # global RNG (a resumed run creates its iterator at another point of that stream).
        generator=torch.Generator(),
    )
    return iter(loader)
