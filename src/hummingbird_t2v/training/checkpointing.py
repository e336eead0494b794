"""Resumable training checkpoints, written atomically.

    <output_dir>/checkpoints/
      step-00000200/
        model.safetensors        the trainable network (objective.trainable_module())
        ema.safetensors          its exponential moving average (when EMA is on)
        objective.safetensors    objective-owned state, e.g. an EMA target network (when there is any)
        optimizer.pt             optimizer state (torch.save; read back with weights_only=True)
        state.json               step, data position, LR-scheduler and grad-scaler state, ...
        rng/rank-00000.safetensors + rank-00000.json   torch / python / numpy RNG states per rank
      .tmp-step-00000400/        a checkpoint being written (or left by a killed run: ignored)

A checkpoint is assembled in `.tmp-step-N` and renamed to `step-N` when complete; the rename is
atomic on POSIX file systems, so any `step-N` folder is whole and a run killed mid-write resumes
from the previous one. Multi-process runs need a file system shared by all ranks (each rank
writes its own RNG state; rank 0 writes the rest and renames).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hummingbird_t2v.errors import CheckpointError

__all__ = [
    "CheckpointState",
    "atomic_write_text",
    "checkpoint_name",
    "commit_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_optimizer_state",
    "load_rng_state",
    "load_tensors",
    "prepare_staging",
    "prune_checkpoints",
    "read_state",
    "remove_stale_staging",
    "save_optimizer_state",
    "save_rng_state",
    "save_tensors",
    "staging_path",
    "write_state",
]

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OBJECTIVE_FILE = "objective.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
RNG_FOLDER = "rng"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_STAGING_PREFIX = ".tmp-"


@dataclass
class CheckpointState:
    """The JSON part of a checkpoint."""

    step: int
    # Micro-batches each rank has consumed; the data stream resumes right after them.
    data_position: int
    world_size: int
    ema_updates: int = 0
    lr_scheduler: dict[str, Any] = field(default_factory=dict)
    grad_scaler: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION


# ------------------------------------------------------------------------------- atomic files


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(name)
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    def write(name: str) -> None:
        Path(name).write_text(text, encoding="utf-8")

    _atomic_write(Path(path), write)


# ------------------------------------------------------------------------------- folders


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def remove_stale_staging(root: str | Path) -> list[Path]:
    """Delete half-written checkpoints left by a killed run; returns what was removed."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_STAGING_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


def staging_path(root: str | Path, step: int) -> Path:
    return Path(root) / f"{_STAGING_PREFIX}{checkpoint_name(step)}"


def prepare_staging(root: str | Path, step: int) -> Path:
    """Create the (empty) folder a checkpoint is assembled in; called by rank 0 only."""
    staging = staging_path(root, step)
    if staging.exists():
        shutil.rmtree(staging)
    (staging / RNG_FOLDER).mkdir(parents=True)
    return staging


def commit_checkpoint(staging: Path, keep: int) -> Path:
    """Rename the assembled checkpoint into place, then delete all but the `keep` newest (0: keep all)."""
    final = staging.parent / staging.name[len(_STAGING_PREFIX) :]
    if final.exists():
        # Only possible when a resumed run re-saves a step; the new one replaces it whole.
        shutil.rmtree(final)
    os.replace(staging, final)
    prune_checkpoints(staging.parent, keep)
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    if keep <= 0:
        return
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------- contents


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(path))


def load_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, delete it to resume from an older one")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}); delete that checkpoint") from None


def save_optimizer_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def load_optimizer_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint is incomplete, delete it to resume from an older one")
    try:
        # weights_only: tensors and plain containers only, no code runs while reading.
        return torch.load(path, map_location="cpu", weights_only=True)
    # A damaged file makes torch's restricted unpickler raise almost anything (UnpicklingError,
    # struct.error, EOFError, RuntimeError, ...): all mean the same to the user.
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable optimizer state ({error}); delete that checkpoint") from None


def write_state(folder: Path, state: CheckpointState) -> None:
    atomic_write_text(folder / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def read_state(folder: Path) -> CheckpointState:
    path = Path(folder) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return CheckpointState(**data)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; {folder} is not a training checkpoint") from None
    except (json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(
            f"{path} is damaged ({error}); delete that checkpoint to resume from an older one"
        ) from None


def _rng_paths(folder: Path, rank: int) -> tuple[Path, Path]:
    base = Path(folder) / RNG_FOLDER / f"rank-{rank:05d}"
    return base.with_suffix(".safetensors"), base.with_suffix(".json")


def save_rng_state(folder: Path, rank: int, generator: torch.Generator) -> None:
    """This rank's RNG streams: torch (CPU and CUDA), the trainer's generator, python, numpy."""
    tensors = {"torch_cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    version, python_state, gauss = random.getstate()
    numpy_state = np.random.get_state()
    plain = {
        "python": [version, list(python_state), gauss],
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    tensor_path, json_path = _rng_paths(folder, rank)
    save_tensors(tensor_path, tensors)
    atomic_write_text(json_path, json.dumps(plain))


def load_rng_state(folder: Path, rank: int, generator: torch.Generator) -> bool:
    """Restore what `save_rng_state` wrote for `rank`; False when this rank has none (e.g. the run
    had fewer processes), in which case the caller's fresh seeding stands."""
    tensor_path, json_path = _rng_paths(folder, rank)
    if not (tensor_path.is_file() and json_path.is_file()):
        return False
    tensors = load_tensors(tensor_path)
    torch.set_rng_state(tensors["torch_cpu"])
    generator.set_state(tensors["generator"])
    cuda_keys = sorted(
        (k for k in tensors if k.startswith("torch_cuda_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    cuda_states = [tensors[k] for k in cuda_keys]
    if cuda_states and torch.cuda.is_available():
        for index, state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, index)
    plain = json.loads(json_path.read_text(encoding="utf-8"))
    version, python_state, gauss = plain["python"]
    random.setstate((version, tuple(python_state), gauss))
    name, keys, *rest = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    return True
