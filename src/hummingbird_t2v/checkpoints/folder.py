"""Diffusers-style model folders: one sub-folder per component, `config.json` + `model.safetensors`.

    my-model/
      model_index.json          which components exist and how the pipeline samples
      unet/config.json          UNetConfig.to_dict()
      unet/model.safetensors
      vae/...  text_encoder/...

Components are built on the meta device (parameters only; buffers stay real so that non-persistent
ones such as position ids keep their values) and the weights are assigned from safetensors, so
loading a 1.4 B-parameter U-Net never initialises random weights first.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hummingbird_t2v.checkpoints.unet_keys import check_state_dict_fits
from hummingbird_t2v.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model_index.json"


def default_permissions(path: Path) -> None:
    """mkstemp/mkdtemp create private files (0600/0700); give the result the user's usual permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))


def read_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; a model folder needs it (re-create the folder with `hummingbird convert`)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); re-create it with `hummingbird convert`") from None


def save_component(folder: Path, module: torch.nn.Module, config: dict[str, Any]) -> None:
    """Save `module`'s weights as safetensors and its config as JSON, each written atomically."""
    folder = Path(folder)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in module.state_dict().items()}
    _atomic_write(folder / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp)))
    write_json(folder / CONFIG_NAME, config)


def load_component(
    folder: Path,
    build: Callable[[dict[str, Any]], torch.nn.Module],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """Build a component from `folder/config.json` with `build(config)` and load its weights strictly."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; re-create the model folder with `hummingbird convert`")
    try:
        state_dict = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({error}); re-create it") from None
    with init_empty_weights(include_buffers=False):
        module = build(config)
    return assign_state_dict(module, state_dict, dtype=dtype, device=device, component=f"{folder.name} in {folder.parent}")


def assign_state_dict(
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    component: str = "model",
) -> torch.nn.Module:
    """Strictly load `state_dict` into a (possibly meta-device) module; a mismatch is named in one message."""
    check_state_dict_fits(module, state_dict, component=component)
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=True)
    module.to(device)
    return module.eval()
