"""Read tensors out of a pickled PyTorch object without importing or running anything it names.

The Hummingbird release files (``07B_merged_all.pt``, ``09B_merged_all.pt``) are ``torch.save`` of a
whole ``LatentDiffusion`` module. ``torch.load(weights_only=True)`` refuses them because they name the
official classes, and ``weights_only=False`` would import and run whatever the file names. This module
reads the torch zip container itself and unpickles ``data.pkl`` with a ``find_class`` that hands out:

* our own implementations of the tensor rebuild helpers (``torch._utils._rebuild_tensor_v2`` ...),
* real builtin containers, ``OrderedDict``, torch dtypes / ``torch.device`` / ``torch.Size``,
* and for every other global an inert placeholder class that only records what it is given.

Nothing callable from the file can reach ``getattr``, ``eval``, ``os`` or any import, so a malicious
REDUCE only builds another placeholder. The module tree is then walked the way ``state_dict()`` walks it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hummingbird_t2v.errors import CheckpointError

# Storage classes as torch.save names them (``torch.HalfStorage`` ...) -> element dtype of the bytes.
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

# Builtins that only build plain data. Deliberately absent: getattr, eval, exec, __import__, open,
# type, object, and every other callable that could reach attributes or code.
_SAFE_BUILTINS: dict[str, Any] = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "long": int,  # protocol-2 pickles written by Python 2-compatible code spell int as __builtin__.long
    "float": float,
    "complex": complex,
    "bool": bool,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
}

# torch globals that are plain values or harmless value types. Looked up in a fixed table, never with
# getattr(torch, name): torch's module __getattr__ imports submodules on demand.
_TORCH_VALUES: dict[str, Any] = {
    **{name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
    "device": torch.device,
    "Size": torch.Size,
}

# Python 2 spellings that protocol-2 pickles use; the stock Unpickler maps these before find_class,
# an override receives them raw.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class PickledPlaceholder:
    """Stand-in for a class or function named in the pickle. Keeps the BUILD state and runs nothing.

    Used both as the "class" (called or ``__new__``-ed by REDUCE/NEWOBJ) and as its instances, so every
    opcode that builds an object from an unknown global lands here. Constructor arguments, items,
    appends and attributes are accepted and dropped: only a module's BUILD state holds tensors.
    """

    pickled_module: str = "?"
    pickled_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledPlaceholder:
        instance = object.__new__(cls)
        object.__setattr__(instance, "_state", None)
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        object.__setattr__(self, "_state", state)

    def __setattr__(self, name: str, value: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_module}.{self.pickled_name}>"

    @property
    def pickled_state(self) -> Any:
        """What BUILD gave the object (for an ``nn.Module``: its ``__dict__``)."""
        return self._state


def _placeholder_class(module: str, name: str) -> type[PickledPlaceholder]:
    # A distinct subclass per global keeps the original name visible in reprs and error messages.
    return type(
        f"Placeholder[{module}.{name}]",
        (PickledPlaceholder,),
        {"pickled_module": module, "pickled_name": name},
    )


@dataclass(frozen=True)
class _StorageRef:
    """A storage record of the zip: raw bytes plus the dtype its storage class implies."""

    data: torch.UntypedStorage
    dtype: torch.dtype


def _tensor_from_storage(
    storage: Any, storage_offset: int, size: Any, stride: Any, dtype: torch.dtype | None = None
) -> torch.Tensor:
    if not isinstance(storage, _StorageRef):
        raise CheckpointError(f"tensor record points at {type(storage).__name__}, not a storage")
    tensor = torch.empty((0,), dtype=dtype or storage.dtype)
    # set_ checks that (offset, size, stride) stay inside the storage, so a lying record raises.
    return tensor.set_(storage.data, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    # requires_grad, hooks and metadata describe training state, not weights: dropped on purpose.
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: int,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError("tensor record has no valid dtype")
    return _tensor_from_storage(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    # A Parameter is only its data for a state dict.
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, backward_hooks: Any, state: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    # Tensor subclasses are saved as (rebuild function, subclass, args); keep the plain tensor.
    # func is itself something find_class handed out, so calling it is as safe as REDUCE.
    return func(*args)


_TORCH_UTILS_REBUILDERS: dict[str, Any] = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, archive: zipfile.ZipFile, record_prefix: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._record_prefix = record_prefix
        self._storages: dict[str, torch.UntypedStorage] = {}
        self._placeholders: dict[tuple[str, str], type[PickledPlaceholder]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "builtins" and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "torch._utils" and name in _TORCH_UTILS_REBUILDERS:
            return _TORCH_UTILS_REBUILDERS[name]
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":
            return _rebuild_from_type_v2
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]  # persistent_load turns this into the bytes' dtype
        if module == "torch" and name in _TORCH_VALUES:
            return _TORCH_VALUES[name]
        key = (module, name)
        if key not in self._placeholders:
            self._placeholders[key] = _placeholder_class(module, name)
        return self._placeholders[key]

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent record {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid[:5]
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"storage record {key!r} names an unknown storage type")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_record(key)
        data = self._storages[key]
        element_size = torch.empty((), dtype=dtype).element_size()
        if data.nbytes() < int(numel) * element_size:
            raise CheckpointError(
                f"storage record {key!r} holds {data.nbytes()} bytes, {int(numel) * element_size} expected"
            )
        return _StorageRef(data, dtype)

    def _read_record(self, key: str) -> torch.UntypedStorage:
        name = f"{self._record_prefix}data/{key}"
        try:
            info = self._archive.getinfo(name)
        except KeyError:
            raise CheckpointError(f"storage record {name!r} is missing from the archive") from None
        buffer = bytearray(info.file_size)
        with self._archive.open(info) as record:
            if record.readinto(buffer) != info.file_size:
                raise CheckpointError(f"storage record {name!r} is truncated")
        if not buffer:
            return torch.UntypedStorage(0)
        return torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()


def _find_data_pickle(archive: zipfile.ZipFile) -> str:
    # torch.save names the inner folder after the file it wrote ("archive/" only by default).
    candidates = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(candidates) != 1:
        raise CheckpointError(f"expected one '<folder>/data.pkl' in the archive, found {len(candidates)}")
    return candidates[0]


def restricted_load(path: str | Path) -> Any:
    """Unpickle the top-level object of a torch zip checkpoint with placeholders for unknown globals.

    Tensors come back as real CPU tensors, containers as real containers, anything else as a
    ``PickledPlaceholder``. Raises ``CheckpointError`` for a file that is not a readable torch zip.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickle_name = _find_data_pickle(archive)
            record_prefix = pickle_name[: -len("data.pkl")]
            byteorder_name = f"{record_prefix}byteorder"
            if byteorder_name in archive.namelist() and archive.read(byteorder_name).strip() != b"little":
                raise CheckpointError("big-endian checkpoints are not supported; re-save it on a little-endian machine")
            with archive.open(pickle_name) as data_pickle:
                unpickler = _RestrictedUnpickler(io.BufferedReader(data_pickle), archive, record_prefix)
                return unpickler.load()
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (zipfile.BadZipFile, EOFError, OSError, pickle.UnpicklingError, RecursionError) as error:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path}: a record claims more bytes than fit in memory (corrupt file?)") from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, RuntimeError) as error:
        # A pickle that calls the allowed constructors with nonsense ends up here.
        raise CheckpointError(f"{path}: malformed pickle ({type(error).__name__}: {error})") from None


def plain_dict(obj: Any) -> dict[Any, Any] | None:
    """A plain copy of a dict (or dict subclass such as OrderedDict) from an unpickled file, else None.

    Reads through ``dict.items`` so that attributes a hostile BUILD may have put on the instance
    (shadowing ``items``, ``get`` ...) are never called.
    """
    if not isinstance(obj, dict):
        return None
    return dict(dict.items(obj))


def _module_dict(obj: Any) -> dict[str, Any] | None:
    """The pickled ``__dict__`` of an ``nn.Module`` placeholder, or None for anything else."""
    if not isinstance(obj, PickledPlaceholder):
        return None
    state = obj.pickled_state
    if isinstance(state, tuple) and len(state) == 2:
        state = state[0]  # (dict state, slot state) form of BUILD
    state = plain_dict(state)
    if state is not None and ("_parameters" in state or "_modules" in state):
        return state
    return None


def is_pickled_module(obj: Any) -> bool:
    """True when ``obj`` (from ``restricted_load``) is a pickled ``torch.nn.Module``."""
    return _module_dict(obj) is not None


def module_state_dict(root: Any) -> dict[str, torch.Tensor]:
    """Reproduce ``root.state_dict()`` for a pickled module: parameters, persistent buffers, children."""
    state_dict: dict[str, torch.Tensor] = {}
    # Explicit stack instead of recursion: a hostile file could nest modules arbitrarily deep. A module
    # shared under two names is emitted under both, as state_dict() does; only true cycles are cut.
    pending: list[tuple[str, Any, frozenset[int]]] = [("", root, frozenset())]
    while pending:
        prefix, module, ancestors = pending.pop()
        attributes = _module_dict(module)
        if attributes is None or id(module) in ancestors:
            continue
        ancestors = ancestors | {id(module)}
        non_persistent_names = attributes.get("_non_persistent_buffers_set")
        non_persistent = (
            frozenset(non_persistent_names) if isinstance(non_persistent_names, (set, frozenset)) else frozenset()
        )
        for name, value in _items(attributes.get("_parameters")):
            if isinstance(value, torch.Tensor):
                state_dict[prefix + name] = value
        for name, value in _items(attributes.get("_buffers")):
            if isinstance(value, torch.Tensor) and name not in non_persistent:
                state_dict[prefix + name] = value
        children = [
            (prefix + name + ".", child, ancestors)
            for name, child in _items(attributes.get("_modules"))
            if child is not None
        ]
        # Reversed onto the stack so children are emitted in registration order, depth first.
        pending.extend(reversed(children))
    return state_dict


def _items(mapping: Any) -> list[tuple[str, Any]]:
    entries = plain_dict(mapping) or {}
    return [(key, value) for key, value in entries.items() if isinstance(key, str)]


def load_pickled_module_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """State dict of a ``torch.save``-d ``nn.Module`` (e.g. ``07B_merged_all.pt``), read without running it.

    Keys and order equal ``module.state_dict()`` of the original object; tensors keep their stored dtype.
    """
    root = restricted_load(path)
    if not is_pickled_module(root):
        raise CheckpointError(
            f"{path} does not hold a pickled torch module (top-level object: {_describe(root)}); "
            "pass a Lightning/DeepSpeed/state-dict checkpoint, a release *_merged_all.pt or a .safetensors file"
        )
    state_dict = module_state_dict(root)
    if not state_dict:
        raise CheckpointError(f"{path} holds a pickled module without any tensors")
    return state_dict


def _describe(obj: Any) -> str:
    if isinstance(obj, PickledPlaceholder):
        return f"{obj.pickled_module}.{obj.pickled_name}"
    return type(obj).__name__
