"""The training dataset: clips from a listing, decoded with PyAV, sharded per rank, bad files skipped.

It is an `IterableDataset` because skipping a clip must not shorten the epoch artificially nor
repeat a neighbour (the official loader's "try the next index" duplicates clips, and every rank
reads the same ones, spec §8.11). Instead:

- each epoch, all ranks compute the same permutation from (seed, epoch) and rank r takes every
  world_size-th clip starting at r, so the ranks' shards are disjoint and together cover the
  dataset; DataLoader workers split their rank's shard the same way;
- a clip that cannot be used (missing, empty, corrupt, not a video, too short) is logged with its
  path, counted, and the iterator moves on;
- the random stride and start of clip i in epoch e come from a generator seeded by
  (seed, e, i), so a sample does not depend on which rank or worker loads it.

Shards differ in size by at most one clip, and skipped clips shrink them further. For multi-rank
training, iterate with `repeat=True` (an endless stream over successive epochs) and stop after a
number of steps, which is how the trainers use it; stopping at the end of a finite epoch would
leave the ranks with unequal step counts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from hummingbird_t2v.data.manifest import ClipRecord, DatasetError, load_clip_records
from hummingbird_t2v.data.sampling import (
    ClipTooShortError,
    FrameSampling,
    choose_frame_window,
    fps_condition,
    resize_center_crop,
)
from hummingbird_t2v.data.video_io import VideoDecodeError, probe_video, read_video
from hummingbird_t2v.errors import ConfigError

__all__ = ["VideoClipDataset", "resolve_rank"]

logger = logging.getLogger(__name__)


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): the explicit values, else torch.distributed's when it is initialised,
    else (0, 1)."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


class _SharedCounter:
    """An integer that DataLoader worker processes can increment and the parent can read.

    Made from the spawn context so it can be handed to workers started by fork, spawn or
    forkserver alike.
    """

    def __init__(self) -> None:
        self._value = multiprocessing.get_context("spawn").Value("q", 0)

    def add(self, amount: int = 1) -> None:
        with self._value.get_lock():
            self._value.value += amount

    def get(self) -> int:
        return int(self._value.value)


class VideoClipDataset(IterableDataset):
    """Yields {"video": float32 (C, T, H, W) in [-1, 1], "caption": str, "fps": int, "path": str}.

    `records`: the clips (see `load_clip_records`, or use `from_source`). `rank`/`world_size`
    default to torch.distributed's when it is initialised at iteration time. Call `set_epoch`
    before each epoch for a new shuffle (as with DistributedSampler; persistent DataLoader workers
    keep the epoch they started with, so use `repeat=True` with them instead).
    `skipped` and `yielded` count over all epochs and all DataLoader workers of this process.
    """

    def __init__(
        self,
        records: Sequence[ClipRecord],
        sampling: FrameSampling | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        repeat: bool = False,
    ) -> None:
        super().__init__()
        if not records:
            raise ConfigError("the dataset has no clips")
        if rank is not None and world_size is not None:
            resolve_rank(rank, world_size)  # validate early, before any iteration
        self.records = list(records)
        self.sampling = sampling if sampling is not None else FrameSampling()
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.repeat = repeat
        self.epoch = 0
        self._skipped = _SharedCounter()
        self._yielded = _SharedCounter()

    @classmethod
    def from_source(
        cls,
        source: str | os.PathLike[str],
        sampling: FrameSampling | None = None,
        *,
        data_root: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> VideoClipDataset:
        """Build from a `path,text` CSV, a WebVid CSV or a captioned folder (see data.manifest)."""
        return cls(load_clip_records(source, data_root=data_root), sampling, **options)

    @property
    def skipped(self) -> int:
        return self._skipped.get()

    @property
    def yielded(self) -> int:
        return self._yielded.get()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard_indices(self, epoch: int) -> list[int]:
        """Indices into `records` that this rank reads in `epoch`, in reading order."""
        rank, world_size = resolve_rank(self.rank, self.world_size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.records))
        else:
            order = np.arange(len(self.records))
        return order[rank::world_size].tolist()

    def __len__(self) -> int:
        """Clips in this rank's shard per epoch (an upper bound: unusable clips are skipped)."""
        rank, world_size = resolve_rank(self.rank, self.world_size)
        return len(range(rank, len(self.records), world_size))

    def load_clip(self, index: int, epoch: int) -> dict[str, Any]:
        """Decode and sample clip `index` as it would be in `epoch`; raises VideoDecodeError or
        ClipTooShortError for an unusable file."""
        record = self.records[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        info = probe_video(record.path)
        try:
            window = choose_frame_window(info.num_frames, self.sampling, rng)
        except ClipTooShortError as error:
            raise ClipTooShortError(f"{record.path}: {error}") from error
        frames, source_fps = read_video(record.path, start=window.start, num_frames=window.length, stride=window.stride)
        if len(frames) < window.length:
            # The header promised more frames than the stream holds (truncated or damaged file).
            raise ClipTooShortError(
                f"{record.path}: decoded {len(frames)} of the {window.length} frames needed "
                f"(the header says {info.num_frames})"
            )
        return {
            "video": resize_center_crop(frames, self.sampling.height, self.sampling.width),
            "caption": record.caption,
            "fps": fps_condition(source_fps, window.stride, self.sampling),
            "path": record.path,
        }

    def _epoch_indices(self, epoch: int) -> list[int]:
        indices = self.shard_indices(epoch)
        worker = get_worker_info()
        if worker is not None:
            indices = indices[worker.id :: worker.num_workers]
        return indices

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        while True:
            indices = self._epoch_indices(epoch)
            usable = 0
            for index in indices:
                try:
                    sample = self.load_clip(index, epoch)
                except (VideoDecodeError, ClipTooShortError) as error:
                    self._skipped.add()
                    logger.warning("skipping unusable clip: %s", error)
                    continue
                usable += 1
                self._yielded.add()
                yield sample
            if not self.repeat or not indices:
                return
            if usable == 0:
                # Repeating a shard in which nothing decodes would spin forever without a sample.
                raise DatasetError(
                    f"none of the {len(indices)} clips in this shard could be used (see the warnings "
                    f"above); check the dataset's files"
                )
            epoch += 1
