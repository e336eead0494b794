"""Reading reward-model weight files and loading them into models built without initialisation.

Reward checkpoints come in the containers their authors chose:

* HPSv2.1 ``HPS_v2.1_compressed.pt``: a torch file, the open_clip state dict possibly nested
  under ``"state_dict"`` (read by `checkpoints.formats.read_checkpoint`, like every other torch
  or safetensors file here);
* ViCLIP ``ViClip-InternVid-10M-FLT.pth``: a torch file whose ``"model"`` entry holds the
  state dict (read here, with the same rules: ``weights_only`` first, the restricted unpickler
  when that refuses a global, never code from the file).

A ``module.`` prefix (left by DistributedDataParallel) is removed when every key has it.
Full-size reward models have ~1B parameters, so they are built on the meta device (no random
initialisation) and given real storage only when the converted weights are loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.safe_unpickle import plain_dict, restricted_load
from hummingbird_t2v.errors import CheckpointError

ModuleT = TypeVar("ModuleT", bound=nn.Module)
_DDP_PREFIX = "module."
# transformers registers token positions as a non-persistent buffer: not in any state dict, so it
# must be rebuilt after `to_empty`. Any other non-persistent buffer would be left uninitialised.
_POSITION_BUFFER = "position_ids"


def read_reward_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The flat state dict of a reward checkpoint (see the module docstring for the containers)."""
    try:
        state_dict = read_checkpoint(path).state_dict
    except CheckpointError:
        nested = _read_model_entry(Path(path).expanduser())
        if nested is None:
            raise
        state_dict = nested
    return strip_ddp_prefix(state_dict)


def _read_model_entry(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors under a top-level ``"model"`` key of a torch zip file, or None."""
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError:
            loaded = restricted_load(path)
    except (CheckpointError, RuntimeError, EOFError, OSError, ValueError, KeyError):
        return None
    top = plain_dict(loaded)
    inner = plain_dict(top.get("model")) if top is not None else None
    if inner is None:
        return None
    tensors = {k: v for k, v in inner.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return tensors or None


def strip_ddp_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state_dict and all(key.startswith(_DDP_PREFIX) for key in state_dict):
        return {key[len(_DDP_PREFIX) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def build_uninitialised(factory: Callable[[], ModuleT]) -> ModuleT:
    """Build a module on the meta device: shapes only, no memory, no random initialisation."""
    with torch.device("meta"):
        return factory()


def load_into_uninitialised(
    model: ModuleT, state_dict: Mapping[str, torch.Tensor], what: str, dtype: torch.dtype = torch.float32
) -> ModuleT:
    """Give a meta-built `model` CPU storage in `dtype` and load `state_dict` into it strictly."""
    # Choosing the dtype before allocating keeps a half-precision load at half the memory.
    model.to(dtype=dtype).to_empty(device="cpu")
    for module in model.modules():
        for name in module._non_persistent_buffers_set:
            if name != _POSITION_BUFFER:
                raise RuntimeError(
                    f"{type(module).__name__} has a non-persistent buffer {name!r} that cannot be rebuilt"
                )
            buffer = module.get_buffer(name)
            buffer.copy_(torch.arange(buffer.shape[-1], dtype=buffer.dtype).expand_as(buffer))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{key}: {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"the {what} weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"wrong shapes {wrong[:3]}; the checkpoint was made for another architecture"
        )
    model.load_state_dict(dict(state_dict), strict=True)
    return model
