"""Restricted unpickling of whole pickled modules (the Hummingbird release layout) and hostile pickles."""

from __future__ import annotations

import builtins
import os
import pickle
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.safe_unpickle import (
    PickledPlaceholder,
    is_pickled_module,
    load_pickled_module_state_dict,
    restricted_load,
)
from hummingbird_t2v.errors import CheckpointError

SCHEDULE_KEYS = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
]
# Top-level packages the release pickle names; none may be imported by loading it.
PICKLE_PACKAGES = ("lvdm", "omegaconf", "open_clip", "pytorch_lightning", "lightning")


@pytest.fixture(scope="module")
def release_state_dict(golden_dir: Path) -> dict[str, torch.Tensor]:
    return load_pickled_module_state_dict(golden_dir / "tiny_release_pickled.pt")


def _with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + name: tensor for name, tensor in tensors.items()}


def test_release_pickle_yields_the_official_state_dict(release_state_dict, golden_dir, reference_dir):
    state = release_state_dict
    assert len(state) == 1150
    assert list(state)[:13] == SCHEDULE_KEYS
    unet = {k: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    vae = {k: v for k, v in state.items() if k.startswith("first_stage_model.")}
    text = {k: v for k, v in state.items() if k.startswith("cond_stage_model.model.")}
    assert (len(unet), len(vae), len(text)) == (851, 244, 42)

    expected = {
        **_with_prefix("model.diffusion_model.", load_file(golden_dir / "tiny_hb07_unet.safetensors")),
        **_with_prefix("first_stage_model.", load_file(golden_dir / "tiny_vae.safetensors")),
        **_with_prefix("cond_stage_model.model.", load_file(golden_dir / "tiny_openclip_text.safetensors")),
    }
    assert set(unet) | set(vae) | set(text) == set(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == torch.float16, name  # parameters were saved as fp16
        assert torch.equal(state[name], tensor), name

    # Order is state_dict() order: the U-Net part follows the official manifest (minus the level-1
    # skip conv that the tiny widths do not need).
    manifest = [line.split("\t")[0] for line in (reference_dir / "keys_hb07_unet.tsv").read_text().splitlines()]
    unet_names = [name.removeprefix("model.diffusion_model.") for name in unet]
    assert unet_names == [name for name in manifest if name in set(unet_names)]
    assert len(manifest) - len(unet_names) == 2


def test_release_schedule_buffers_are_float32_and_follow_the_official_formula(release_state_dict):
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - betas, dim=0)
    assert release_state_dict["betas"].dtype == torch.float32
    torch.testing.assert_close(release_state_dict["betas"], betas.float(), rtol=0, atol=1e-9)
    torch.testing.assert_close(release_state_dict["alphas_cumprod"], alphas_cumprod.float(), rtol=0, atol=1e-7)
    assert release_state_dict["scale_arr"].shape == (1400,)


def test_loading_the_release_imports_nothing_it_names(golden_dir):
    before = set(sys.modules)
    root = restricted_load(golden_dir / "tiny_release_pickled.pt")
    new_top_levels = {name.split(".")[0] for name in set(sys.modules) - before}
    assert not new_top_levels & set(PICKLE_PACKAGES)
    assert isinstance(root, PickledPlaceholder)
    assert (root.pickled_module, root.pickled_name) == ("lvdm.models.ddpm3d", "LatentDiffusion")
    assert is_pickled_module(root)


def test_read_checkpoint_routes_the_release_to_the_restricted_unpickler(golden_dir, release_state_dict):
    with pytest.raises(pickle.UnpicklingError):  # the premise: the safe stock loader refuses this file
        torch.load(golden_dir / "tiny_release_pickled.pt", weights_only=True)
    raw = read_checkpoint(golden_dir / "tiny_release_pickled.pt")
    assert raw.format == "pickled_module"
    assert list(raw.state_dict) == list(release_state_dict)


class _Registry(dict):
    """A dict subclass: pickled as NEWOBJ + SETITEMS, which the placeholder must absorb."""


class _History(list):
    """A list subclass: pickled with APPENDS."""


class _Slotted:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


class _TinyNet(nn.Module):
    """Exercises what state_dict() does: params, persistent/non-persistent buffers, None entries, nesting."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv1d(4, 4, 1), nn.GroupNorm(2, 4)), nn.Identity()])
        self.register_buffer("persistent", torch.arange(5, dtype=torch.int64))
        self.register_buffer("scratch", torch.ones(2), persistent=False)
        self.register_parameter("absent", None)
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.shared = self.proj  # registered twice: state_dict() lists it under both names
        self.empty_slot = None
        self.config = {"channels": [3, 4], "name": "tiny"}  # plain attributes are ignored
        self.half_view = torch.zeros(4, 6).half()[:, ::2]  # non-contiguous, not registered
        self.registry = _Registry(weights=torch.ones(3))  # tensors outside _parameters/_buffers: ignored
        self.history = _History([1, 2, 3])
        self.slotted = _Slotted(4)  # BUILD with slot state -> setattr on the placeholder
        self.alias = self.proj.forward  # bound method: pickled as REDUCE getattr(module, "forward")


def test_pickled_module_walk_reproduces_state_dict(tmp_path):
    torch.manual_seed(0)
    model = _TinyNet()
    path = tmp_path / "whole_model.pt"
    torch.save(model, path)
    state = load_pickled_module_state_dict(path)
    expected = model.state_dict()
    assert list(state) == list(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype
        assert torch.equal(state[name], tensor), name


def test_views_into_one_storage_keep_their_offsets_and_strides(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    module = nn.Module()
    module.register_buffer("full", base)
    module.register_buffer("column", base[:, 1])
    module.register_buffer("block", base[1:3, 2:5])
    path = tmp_path / "views.pt"
    torch.save(module, path)
    state = load_pickled_module_state_dict(path)
    for name in ("full", "column", "block"):
        assert torch.equal(state[name], getattr(module, name)), name


def _touch_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


class _SystemCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (_touch_command(self.marker),))


class _EvalCall(_SystemCall):
    def __reduce__(self):
        return (builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _ExecCall(_SystemCall):
    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class _SubprocessCall(_SystemCall):
    def __reduce__(self):
        return (subprocess.call, (["touch", str(self.marker)],))


def _getattr_import_chain(marker: Path) -> bytes:
    """Protocol-0 pickle of getattr(__import__('os'), 'system')('touch marker'): no class needed."""
    return (
        b"c__builtin__\ngetattr\n(c__builtin__\n__import__\n(S'os'\ntRS'system'\ntR"
        + b"(S'"
        + _touch_command(marker).encode()
        + b"'\ntR."
    )


def _replace_data_pickle(template: Path, payload: bytes, destination: Path) -> None:
    """Copy a torch zip, swapping its data.pkl for a hand-written pickle."""
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(destination, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = payload if info.filename.endswith("/data.pkl") else source.read(info)
            target.writestr(info, data)


def _hostile_files(tmp_path: Path, marker: Path) -> list[Path]:
    paths = []
    for index, payload in enumerate(
        [_SystemCall(marker), _EvalCall(marker), _ExecCall(marker), _SubprocessCall(marker)]
    ):
        path = tmp_path / f"hostile_{index}.pt"
        torch.save(payload, path)
        paths.append(path)
        # The same payload tucked inside a checkpoint dict next to real weights.
        nested = tmp_path / f"hostile_nested_{index}.ckpt"
        torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": payload}, nested)
        paths.append(nested)
    template = tmp_path / "template.pt"
    torch.save({"w": torch.ones(1)}, template)
    chain = tmp_path / "hostile_getattr_chain.pt"
    _replace_data_pickle(template, _getattr_import_chain(marker), chain)
    paths.append(chain)
    return paths


def _data_pickle_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        return archive.read(name)


def test_hostile_payloads_really_execute_under_plain_pickle(tmp_path):
    """Control: the payloads used below do run code when unpickled the unsafe way."""
    marker = tmp_path / "control_marker"
    for path in _hostile_files(tmp_path, marker):
        if "nested" in path.name:
            continue  # these need torch's persistent_load; the flat ones prove the payloads work
        pickle.loads(_data_pickle_bytes(path))
        assert marker.exists(), path.name
        marker.unlink()


def test_hostile_pickles_do_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    for path in _hostile_files(tmp_path, marker):
        if "nested" in path.name:
            # Weights next to the payload still load; the payload becomes an inert placeholder.
            raw = read_checkpoint(path)
            assert raw.format == "lightning"
            assert torch.equal(raw.state_dict["w"], torch.ones(2))
        else:
            with pytest.raises(CheckpointError) as error:
                read_checkpoint(path)
            assert str(path) in str(error.value)
            with pytest.raises(CheckpointError):
                load_pickled_module_state_dict(path)
        assert not marker.exists(), f"{path.name} executed code"


def test_containers_with_shadowed_methods_are_read_without_calling_them(tmp_path):
    # {"state_dict": OrderedDict()} whose BUILD puts an `items` attribute on the OrderedDict instance.
    payload = b"(dS'state_dict'\nccollections\nOrderedDict\n)R(dS'items'\ncos\nsystem\nsbs."
    template = tmp_path / "template.pt"
    torch.save({"w": torch.ones(1)}, template)
    path = tmp_path / "shadowed.ckpt"
    _replace_data_pickle(template, payload, path)
    with pytest.raises(CheckpointError, match="contains no tensors"):
        read_checkpoint(path)


def test_truncated_and_garbled_archives_raise_checkpoint_error(tmp_path, golden_dir):
    data = (golden_dir / "tiny_release_pickled.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_pickled_module_state_dict(truncated)

    no_pickle = tmp_path / "no_pickle.pt"
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("weights/readme.txt", "no data.pkl here")
    with pytest.raises(CheckpointError, match="data.pkl"):
        restricted_load(no_pickle)

    # A storage record that is shorter than the tensor that points into it.
    template = tmp_path / "one_tensor.pt"
    torch.save({"w": torch.ones(16)}, template)
    short = tmp_path / "short_record.pt"
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(short, "w") as target:
        for info in source.infolist():
            payload = source.read(info)
            target.writestr(info, payload[:8] if "/data/" in info.filename else payload)
    with pytest.raises(CheckpointError, match="bytes"):
        restricted_load(short)
