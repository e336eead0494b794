"""Crash-safe progress files: append-only JSON lines, and atomic whole-file writes.

A run killed at any instant (kill -9 included) leaves at worst one torn line at the end of a
journal; loading drops it (and truncates it away so the next append starts cleanly), and the clip
it described is simply measured again. Lines are keyed by clip_id and the last one wins, so a clip
appears exactly once however often the run was interrupted.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    # NaN is not JSON; numpy scalars are not JSON-serialisable.
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain_record(record: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in record.items()}


class Journal:
    """One JSON object per line, keyed by `clip_id`."""

    def __init__(self, path: Path, fsync_every_s: float = 2.0) -> None:
        self.path = path
        self._handle = None
        self._fsync_every = fsync_every_s
        self._last_sync = time.monotonic()

    def load(self) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return entries
        with self.path.open("rb+") as handle:
            data = handle.read()
            complete = data.rfind(b"\n") + 1  # bytes after the last newline were torn by a kill
            for line in data[:complete].splitlines():
                try:
                    entry = json.loads(line)
                    entries[entry["clip_id"]] = entry
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    continue
            if complete < len(data):
                handle.truncate(complete)
        return entries

    def append(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        # One write call per record: a kill can tear at most this line.
        self._handle.write(json.dumps(plain_record(record), ensure_ascii=False) + "\n")
        self._handle.flush()
        now = time.monotonic()
        if now - self._last_sync >= self._fsync_every:  # survive power loss too, without an fsync per clip
            os.fsync(self._handle.fileno())
            self._last_sync = now

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_atomic(path: Path, write: Any, mode: str = "w") -> None:
    """Call `write(handle)` on a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    write_atomic(path, lambda handle: json.dump(payload, handle, indent=2, sort_keys=True, default=str))
