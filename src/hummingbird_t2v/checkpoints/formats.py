"""Open any supported weights file and return its flat state dict, without running code from it.

Formats, told apart by content (the file extension is not trusted):

* ``safetensors``      a .safetensors file;
* ``lightning``        a torch file holding ``{"state_dict": {...}, "epoch": ..., "global_step": ...}``
                       (VideoCrafter2 ``model.ckpt``, stage-1 checkpoints);
* ``deepspeed``        a torch file holding ``{"module": {"_forward_module.<name>": tensor, ...}}``; the
                       prefix is stripped and ``teacher*`` entries dropped, as the official loader does;
* ``state_dict``       a torch file holding a flat ``{name: tensor}`` mapping;
* ``pickled_module``   a ``torch.save``-d ``nn.Module`` (the Hummingbird ``*_merged_all.pt`` release),
                       read with the restricted unpickler of ``safe_unpickle``.

Torch files go through ``torch.load(weights_only=True)`` first; only when that refuses the file's
globals does the restricted unpickler take over. Either way no class named by the file is imported.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from hummingbird_t2v.checkpoints.safe_unpickle import (
    PickledPlaceholder,
    is_pickled_module,
    module_state_dict,
    plain_dict,
    restricted_load,
)
from hummingbird_t2v.errors import CheckpointError

DEEPSPEED_PREFIX = "_forward_module."
_TRAINING_COUNTERS = ("epoch", "global_step", "global_steps", "global_samples")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_WHAT_TO_PASS = "pass a .safetensors file, a Lightning/DeepSpeed .ckpt, a state-dict .pt or a release *_merged_all.pt"


@dataclass
class RawCheckpoint:
    """A weights file read into memory: the flat state dict plus what the container said about it."""

    path: Path
    format: str  # "safetensors", "lightning", "deepspeed", "state_dict" or "pickled_module"
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | Path) -> RawCheckpoint:
    """Read ``path`` into a ``RawCheckpoint``; any unreadable or unrecognised file raises ``CheckpointError``."""
    path = Path(path).expanduser()
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_torch(path, is_zip=kind == "torch_zip")


def _sniff(path: Path) -> str:
    if not path.exists():
        raise CheckpointError(f"no such file: {path}; {_WHAT_TO_PASS}")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file; {_WHAT_TO_PASS} "
            "(a folder written by `hummingbird convert` is opened with HummingbirdPipeline.from_pretrained)"
        )
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), probably an interrupted download or copy; fetch it again")
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    if head.startswith(_ZIP_MAGIC):
        return "torch_zip"
    if len(head) == 9 and head[8:9] == b"{":
        # safetensors: little-endian u64 header length, then a JSON header.
        (header_length,) = struct.unpack("<Q", head[:8])
        if 8 + header_length > size:
            raise CheckpointError(f"{path} is a truncated safetensors file (header runs past the end); fetch it again")
        return "safetensors"
    if head[0] == _PICKLE_PROTO:
        return "torch_legacy"
    raise CheckpointError(f"{path} is not a checkpoint (neither safetensors nor a PyTorch file); {_WHAT_TO_PASS}")


def _read_safetensors(path: Path) -> RawCheckpoint:
    try:
        state_dict = load_file(path, device="cpu")
        with safe_open(path, framework="pt") as handle:
            metadata: dict[str, Any] = dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} is a corrupt or truncated safetensors file ({error}); fetch it again") from None
    if not state_dict:
        raise CheckpointError(f"{path} holds no tensors; {_WHAT_TO_PASS}")
    return RawCheckpoint(path, "safetensors", state_dict, metadata)


def _read_torch(path: Path, is_zip: bool) -> RawCheckpoint:
    try:
        # mmap keeps big zip checkpoints out of RAM until a tensor is used; legacy files cannot be mapped.
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:
        if not is_zip:
            raise CheckpointError(
                f"{path} is an old-style (non-zip) PyTorch file that cannot be read safely: it is corrupt or "
                "pickles custom classes; re-save its state dict with a current torch, or pass a .safetensors file"
            ) from None
        # weights_only refused a global: read it again with placeholders for every unknown class.
        loaded = restricted_load(path)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} is a corrupt or truncated PyTorch file ({_reason(error)}); fetch it again"
        ) from None
    return _interpret(path, loaded)


def _interpret(path: Path, loaded: Any) -> RawCheckpoint:
    if is_pickled_module(loaded):
        return RawCheckpoint(path, "pickled_module", _tensors_only(path, module_state_dict(loaded)))
    top = plain_dict(loaded)
    if top is None:
        raise CheckpointError(f"{path} holds a {_type_name(loaded)}, not weights; {_WHAT_TO_PASS}")
    metadata = {key: int(top[key]) for key in _TRAINING_COUNTERS if type(top.get(key)) is int}
    lightning_state = plain_dict(top.get("state_dict"))
    if lightning_state is not None:
        return RawCheckpoint(path, "lightning", _tensors_only(path, lightning_state), metadata)
    deepspeed_state = plain_dict(top.get("module"))
    if deepspeed_state is not None:
        return RawCheckpoint(path, "deepspeed", _tensors_only(path, _unwrap_deepspeed(deepspeed_state)), metadata)
    if any(isinstance(value, torch.Tensor) for value in top.values()):
        return RawCheckpoint(path, "state_dict", _tensors_only(path, top), metadata)
    keys = ", ".join(repr(key) for key in list(top)[:8])
    raise CheckpointError(
        f"{path} holds a dict without weights (top-level keys: {keys}); expected 'state_dict' (Lightning), "
        "'module' (DeepSpeed) or a flat name->tensor mapping"
    )


def _unwrap_deepspeed(module_state: dict[Any, Any]) -> dict[str, Any]:
    # The official loader cuts the first 16 characters blindly; stripping only a real prefix is the same
    # for DeepSpeed files and does not mangle keys that lack it.
    unwrapped = {}
    for key, value in module_state.items():
        if not isinstance(key, str):
            continue
        name = key[len(DEEPSPEED_PREFIX) :] if key.startswith(DEEPSPEED_PREFIX) else key
        if name.startswith("teacher"):
            continue  # the frozen distillation teacher travels in the same file; it is not the model
        unwrapped[name] = value
    return unwrapped


def _tensors_only(path: Path, mapping: dict[Any, Any]) -> dict[str, torch.Tensor]:
    tensors = {key: value for key, value in mapping.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} contains no tensors; {_WHAT_TO_PASS}")
    return tensors


def _type_name(obj: Any) -> str:
    if isinstance(obj, PickledPlaceholder):
        return f"{obj.pickled_module}.{obj.pickled_name} object"
    return type(obj).__name__


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    if "central directory" in text:
        return "incomplete zip archive"  # torch's miniz wording for a cut-off file
    first_sentence = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    return first_sentence[:160]
