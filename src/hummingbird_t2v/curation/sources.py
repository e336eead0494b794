"""Find the clips of a collection: a folder of videos, or a CSV in one of the WebVid-style layouts.

Layouts (training-and-data spec §5.4):
- "path_text": columns `path` (relative to the data folder, or absolute) and `text` (the caption),
  as the stage-1 loader reads them.
- "webvid": columns `page_dir`, `videoid` and `name` (the caption); the file is
  `<data_dir>/videos/<page_dir>/<videoid>.mp4`, as the stage-2 loader reads them.

A folder is scanned recursively. Files with a video extension are clips; a `.txt` file with the
same stem as a clip is its caption. Other files are recorded as clips too (they fail the probe with
a reason) unless they are obviously not media (captions, tables, notes, hidden files).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hummingbird_t2v.errors import HummingbirdError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".3gp", ".gif"}
_SIDECAR_EXTENSIONS = {".txt", ".csv", ".json", ".jsonl", ".yaml", ".yml", ".md", ".parquet", ".tsv"}


class InputError(HummingbirdError):
    """The INPUT of a curation run cannot be read as a collection."""


@dataclass(frozen=True)
class Collection:
    layout: str  # "folder", "path_text" or "webvid"
    data_dir: Path  # what relative paths are resolved against
    records: list[dict[str, Any]]  # clip_id, path, caption, and the layout's own columns


def _folder_records(root: Path) -> list[dict[str, Any]]:
    records = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            file = Path(dirpath) / filename
            suffix = file.suffix.lower()
            if suffix in _SIDECAR_EXTENSIONS:
                continue
            caption_file = file.with_suffix(".txt")
            caption = caption_file.read_text(encoding="utf-8", errors="replace").strip() if caption_file.is_file() else ""
            relative = file.relative_to(root).as_posix()
            records.append({"clip_id": relative, "path": os.path.abspath(file), "caption": caption, "source_path": relative})
    return records


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"cannot read {path} as CSV ({error}); pass a UTF-8 CSV or a folder of videos") from None


def _unique(clip_id: str, seen: dict[str, int]) -> str:
    count = seen.get(clip_id, 0)
    seen[clip_id] = count + 1
    return clip_id if count == 0 else f"{clip_id}#{count}"


def _csv_records(path: Path, data_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    columns, rows = _read_csv(path)
    seen: dict[str, int] = {}
    records = []
    if {"path", "text"} <= set(columns):
        for row in rows:
            source = row["path"].strip()
            resolved = Path(source) if os.path.isabs(source) else data_dir / source
            records.append(
                {"clip_id": _unique(source, seen), "path": str(resolved), "caption": row["text"] or "", "source_path": source}
            )
        return "path_text", records
    if {"page_dir", "videoid", "name"} <= set(columns):
        for row in rows:
            page_dir, videoid = row["page_dir"].strip(), row["videoid"].strip()
            source = f"{page_dir}/{videoid}.mp4"
            records.append(
                {
                    "clip_id": _unique(source, seen),
                    "path": str(data_dir / "videos" / page_dir / f"{videoid}.mp4"),
                    "caption": row["name"] or "",
                    "source_path": source,
                    "page_dir": page_dir,
                    "videoid": videoid,
                }
            )
        return "webvid", records
    raise InputError(
        f"{path} has columns {columns}; expected 'path,text' (stage-1 layout) or 'page_dir,videoid,name' (WebVid layout)"
    )


def discover(input_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> Collection:
    """List the clips of INPUT (a folder or a CSV); relative CSV paths resolve against `data_dir`."""
    source = Path(input_path)
    if source.is_dir():
        if data_dir is not None:
            raise InputError("--data-dir only applies to CSV input; INPUT is a folder")
        return Collection("folder", source.resolve(), _folder_records(source))
    if source.is_file() and source.suffix.lower() == ".csv":
        base = Path(data_dir) if data_dir is not None else source.parent
        if not base.is_dir():
            raise InputError(f"data folder {base} does not exist; pass the folder the CSV paths are relative to with --data-dir")
        layout, records = _csv_records(source, base.resolve())
        return Collection(layout, base.resolve(), records)
    if source.exists():
        raise InputError(f"{source} is neither a folder of videos nor a .csv file")
    raise InputError(f"input {source} does not exist")
