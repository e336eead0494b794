"""Clip lists: turn a dataset on disk into (video path, caption) records.

Three layouts are understood, picked automatically from what `source` is:

1. A CSV with columns `path,text` (the official stage-1 loader). Relative paths resolve against
   `data_root` when given, otherwise against the CSV's folder. Extra columns are ignored (the toy
   world writes its attributes there).
2. A CSV with columns `videoid,page_dir,name` (WebVid metadata, the official stage-2 loader):
   the video is `<data_root>/videos/<page_dir>/<videoid>.mp4` (data_root defaults to the CSV's
   folder) and the caption is `name`.
3. A folder of videos (.mp4 .mkv .webm .mov .avi .gif, searched recursively) with captions either
   in `captions.jsonl` at the folder's top (one JSON object per line: {"path": "<file relative to
   the folder>", "text": "<caption>"}) or, for videos it does not list, in a sidecar text file
   next to each video with the same name and a .txt extension (clip.mp4 -> clip.txt).

Only the listing is checked here; whether a file decodes is the dataset's business (a bad clip
is skipped at load time, never fatal).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from hummingbird_t2v.errors import HummingbirdError

__all__ = ["VIDEO_EXTENSIONS", "ClipRecord", "DatasetError", "load_clip_records"]

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".gif"})
CAPTIONS_JSONL = "captions.jsonl"


class DatasetError(HummingbirdError):
    """A dataset listing that cannot be read (missing file, unknown columns, missing captions)."""


@dataclass(frozen=True)
class ClipRecord:
    """One training clip: where the video is and what it shows."""

    path: str
    caption: str


def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{csv_path}: cannot read the CSV ({error})") from error
    return columns, rows


def _resolve(root: Path, relative: str) -> str:
    path = Path(relative)
    return str(path if path.is_absolute() else root / path)


def _records_from_csv(csv_path: Path, data_root: Path | None) -> list[ClipRecord]:
    columns, rows = _read_csv_rows(csv_path)
    root = data_root if data_root is not None else csv_path.parent
    if {"path", "text"} <= set(columns):
        return [ClipRecord(_resolve(root, row["path"]), row["text"] or "") for row in rows if row["path"]]
    if {"videoid", "page_dir", "name"} <= set(columns):
        videos = root / "videos"
        return [
            ClipRecord(str(videos / row["page_dir"] / f"{row['videoid']}.mp4"), row["name"] or "")
            for row in rows
            if row["videoid"]
        ]
    raise DatasetError(
        f"{csv_path}: unknown CSV layout (columns {columns}); expected `path,text` or `videoid,page_dir,name` (WebVid)"
    )


def _read_captions_jsonl(jsonl_path: Path) -> dict[str, str]:
    captions: dict[str, str] = {}
    try:
        lines = jsonl_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{jsonl_path}: cannot read ({error})") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            captions[os.path.normpath(entry["path"])] = str(entry["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DatasetError(
                f'{jsonl_path}, line {number}: expected a JSON object with "path" and "text" ({error})'
            ) from error
    return captions


def _records_from_folder(folder: Path) -> list[ClipRecord]:
    jsonl_path = folder / CAPTIONS_JSONL
    listed = _read_captions_jsonl(jsonl_path) if jsonl_path.is_file() else {}
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    records: list[ClipRecord] = []
    uncaptioned: list[Path] = []
    for video in videos:
        relative = os.path.normpath(video.relative_to(folder))
        sidecar = video.with_suffix(".txt")
        if relative in listed:
            records.append(ClipRecord(str(video), listed[relative]))
        elif sidecar.is_file():
            records.append(ClipRecord(str(video), sidecar.read_text(encoding="utf-8").strip()))
        else:
            uncaptioned.append(video)
    if uncaptioned:
        examples = ", ".join(str(p) for p in uncaptioned[:3])
        raise DatasetError(
            f"{folder}: {len(uncaptioned)} videos have no caption (e.g. {examples}); add them to "
            f"{CAPTIONS_JSONL} or write a .txt file with the same name next to each video"
        )
    return records


def load_clip_records(
    source: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None
) -> list[ClipRecord]:
    """List the clips of a dataset: a `path,text` CSV, a WebVid `videoid,page_dir,name` CSV, or a
    folder of videos with captions (see the module docstring). Raises `DatasetError` when the
    listing is unusable or empty."""
    source_path = Path(os.fspath(source))
    root = Path(os.fspath(data_root)) if data_root is not None else None
    if source_path.is_dir():
        records = _records_from_folder(source_path)
    elif source_path.is_file() and source_path.suffix.lower() == ".csv":
        records = _records_from_csv(source_path, root)
    elif source_path.exists():
        raise DatasetError(f"{source_path}: expected a .csv file or a folder of videos")
    else:
        raise DatasetError(f"{source_path}: no such file or folder")
    if not records:
        raise DatasetError(f"{source_path}: the dataset lists no clips")
    return records
