"""Training metrics: a CSV file always, TensorBoard when it is installed (and not switched off).

    <output_dir>/logs/train.csv     step, loss, lr, grad_norm, samples_per_s, <objective logs...>

The CSV columns are fixed by the first row written; keys that appear later are reported once and
left out (the file stays rectangular for pandas / spreadsheets). On resume, rows past the
checkpoint's step (written by the interrupted run) are dropped first, so every step appears once.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.training.checkpointing import atomic_write_text

__all__ = ["MetricsLogger", "truncate_step_file"]

logger = logging.getLogger(__name__)


def truncate_step_file(path: Path, last_step: int, *, header: bool) -> None:
    """Drop the lines of a CSV/TSV whose first column (a step number) is greater than `last_step`."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    kept = []
    for line in body:
        first = line.split(",", 1)[0].split("\t", 1)[0]
        try:
            if int(first) > last_step:
                continue
        except ValueError:
            continue  # a line cut short by the kill
        kept.append(line)
    atomic_write_text(path, "".join(head + kept))


def _tensorboard_writer(folder: Path, mode: bool | str) -> Any:
    if mode is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if mode is True:
            raise ConfigError(
                "logging.tensorboard is true but tensorboard is not installed; pip install tensorboard"
            ) from None
        return None
    return SummaryWriter(log_dir=str(folder))


class MetricsLogger:
    """Rank 0 writes; other ranks get a logger whose methods do nothing."""

    def __init__(
        self,
        output_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool | str = "auto",
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.csv_path = Path(output_dir) / "logs" / "train.csv"
        self._columns: list[str] | None = None
        self._warned: set[str] = set()
        self._tb = None
        if not enabled:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_step_file(self.csv_path, resume_step, header=True)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        if self.csv_path.is_file() and self.csv_path.stat().st_size:
            with self.csv_path.open(newline="", encoding="utf-8") as handle:
                self._columns = next(csv.reader(handle), None)
        self._tb = _tensorboard_writer(self.csv_path.parent / "tensorboard", tensorboard)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **metrics}
        if self._columns is None:
            self._columns = list(row)
            with self.csv_path.open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self._columns)
        extra = sorted(set(row) - set(self._columns) - self._warned)
        if extra:
            logger.warning(
                "metrics %s appeared after the CSV header was written; they go to TensorBoard only",
                extra,
            )
            self._warned.update(extra)
        with self.csv_path.open("a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([_format(row.get(column, "")) for column in self._columns])
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _format(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value
