"""Output files: the manifest (Parquet + CSV, one row per clip) and the curated CSV for the trainer."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from hummingbird_t2v.curation.journal import write_atomic
from hummingbird_t2v.curation.stages import MEASUREMENT_DEFAULTS

LEADING_COLUMNS = [
    "clip_id",
    "path",
    "source_path",
    "keep",
    "drop_reasons",
    "caption",
    "caption_original",
    "recaption_status",
]


def manifest_columns(records: list[dict[str, Any]]) -> list[str]:
    extra = sorted({key for record in records for key in record} - set(LEADING_COLUMNS) - set(MEASUREMENT_DEFAULTS))
    return LEADING_COLUMNS + list(MEASUREMENT_DEFAULTS) + extra


def write_manifest(records: list[dict[str, Any]], output_dir: Path) -> tuple[Path, Path]:
    import pandas as pd

    columns = manifest_columns(records)
    frame = pd.DataFrame([{column: record.get(column) for column in columns} for record in records], columns=columns)
    # Object columns holding only bools/None become nullable booleans, which Parquet stores natively.
    for column in ("keep", "is_static", "is_dolly_zoom", "has_audio"):
        frame[column] = frame[column].astype("boolean")
    parquet = output_dir / "manifest.parquet"
    table_csv = output_dir / "manifest.csv"
    write_atomic(parquet, lambda handle: frame.to_parquet(handle, index=False), mode="wb")
    write_atomic(table_csv, lambda handle: frame.to_csv(handle, index=False))
    return parquet, table_csv


def write_curated_csv(records: list[dict[str, Any]], layout: str, output_dir: Path) -> Path:
    """The kept clips in the layout the training loader reads, with the new captions.

    - "webvid" input: `videoid,page_dir,name` (paths stay `<data_dir>/videos/<page_dir>/<videoid>.mp4`).
    - "path_text" input: `path,text` with `path` exactly as the input CSV had it (same data folder).
    - folder input: `path,text` with absolute paths.
    """
    kept = [record for record in records if record.get("keep")]
    path = output_dir / "curated.csv"

    def write(handle: Any) -> None:
        writer = csv.writer(handle)
        if layout == "webvid":
            writer.writerow(["videoid", "page_dir", "name"])
            for record in kept:
                writer.writerow([record["videoid"], record["page_dir"], record.get("caption") or ""])
        else:
            writer.writerow(["path", "text"])
            for record in kept:
                location = record["source_path"] if layout == "path_text" else record["path"]
                writer.writerow([location, record.get("caption") or ""])

    write_atomic(path, write)
    return path
