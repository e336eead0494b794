"""Engines that map a per-clip function over records, streaming results back as they finish.

Both engines run the same picklable function (`stages.measure_clip` with the run's config) and
keep a bounded number of clips in flight, so memory does not grow with the collection:
- local: a process pool (or the calling process when workers == 1);
- ray: Ray Data, on a local Ray started for the run or on an existing cluster (`address="auto"`).
Results come back in completion order; the caller keys them by clip_id.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from hummingbird_t2v.curation.config import EngineConfig
from hummingbird_t2v.errors import HummingbirdError

Record = dict[str, Any]


class EngineError(HummingbirdError):
    """The chosen engine cannot run (missing package, unreachable cluster)."""


def _quiet_worker() -> None:
    # One analysis thread per process: the pool already uses every core, and nested thread pools
    # (OpenCV, FFmpeg, torch) would oversubscribe them.
    import cv2

    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _clean(record: Record) -> Record:
    # Arrow round trips turn missing floats into NaN and ints into numpy scalars; records stay plain.
    cleaned = {}
    for key, value in record.items():
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        cleaned[key] = value
    return cleaned


def run_local(function: Callable[[Record], Record], records: Iterable[Record], workers: int, window: int) -> Iterator[Record]:
    count = workers or os.cpu_count() or 1
    if count == 1:
        _quiet_worker()
        for record in records:
            yield function(record)
        return
    in_flight_max = max(count, min(window, 4 * count))
    # "spawn": forking a parent that holds OpenCV/FFmpeg thread pools can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=context, initializer=_quiet_worker) as pool:
        pending: set[Future[Record]] = set()
        for record in records:
            pending.add(pool.submit(function, record))
            if len(pending) >= in_flight_max:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()


class _RowFunction:
    """Adapts a record function to Ray Data's row interface (a module-level, picklable object)."""

    def __init__(self, function: Callable[[Record], Record]) -> None:
        self.function = function

    def __call__(self, row: Record) -> Record:
        _quiet_worker()
        return self.function(_clean(dict(row)))


def _start_ray(config: EngineConfig) -> bool:
    """Connect to (or start) Ray; returns True when this call started it and must shut it down."""
    try:
        import ray
    except ImportError:
        raise EngineError('the ray engine needs Ray Data: pip install "ray[data]" (or the curation extra)') from None
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if config.ray_address:
        options["address"] = config.ray_address
    else:
        options["num_cpus"] = config.ray_num_cpus or os.cpu_count() or 1
        options["object_store_memory"] = int(config.ray_object_store_mb * 1024 * 1024)
    try:
        ray.init(**options)
    except ConnectionError as error:
        raise EngineError(f"cannot reach the Ray cluster at {config.ray_address!r}: {error}") from None
    return True


def run_ray(function: Callable[[Record], Record], records: Iterable[Record], config: EngineConfig) -> Iterator[Record]:
    started = _start_ray(config)
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the pipeline draws its own progress bar
    context.print_on_execution_start = False
    # Per-dataset INFO lines and the notice that progress bars are off would interleave with ours.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    mapper = _RowFunction(function)
    try:
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= config.window:
                yield from _ray_window(batch, mapper, cpus)
                batch = []
        if batch:
            yield from _ray_window(batch, mapper, cpus)
    finally:
        if started:
            ray.shutdown()


def _ray_window(batch: list[Record], mapper: _RowFunction, cpus: int) -> Iterator[Record]:
    import ray.data

    # Small blocks spread the window over every CPU; each clip is one row.
    blocks = max(1, min(len(batch), 4 * cpus))
    dataset = ray.data.from_items(batch, override_num_blocks=blocks).map(mapper, num_cpus=1)
    for row in dataset.iter_rows():
        yield _clean(dict(row))


def run_engine(function: Callable[[Record], Record], records: Iterable[Record], config: EngineConfig) -> Iterator[Record]:
    if config.kind == "ray":
        return run_ray(function, records, config)
    return run_local(function, records, config.workers, config.window)
