"""Every supported weights-file format, component routing, U-Net structure inference and fit errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hummingbird_t2v.checkpoints.components import LDM_SCHEDULE_KEYS, split_components
from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.unet_keys import (
    check_state_dict_fits,
    expected_unet_shapes,
    infer_unet_config,
    match_unet_preset,
)
from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNET_PRESETS

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.model."
TINY_STRUCTURES = {"vc2": "tiny-vc2", "hb09": "tiny-hb-0.9b", "hb07": "tiny-hb-0.7b"}
FULL_PRESETS = {"vc2": "vc2", "hb09": "hb-0.9b", "hb07": "hb-0.7b"}


@pytest.fixture(scope="module")
def tiny_unets(golden_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(golden_dir / f"tiny_{name}_unet.safetensors") for name in TINY_STRUCTURES}


@pytest.fixture(scope="module")
def tiny_vae(golden_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(golden_dir / "tiny_vae.safetensors")


@pytest.fixture(scope="module")
def tiny_text(golden_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(golden_dir / "tiny_openclip_text.safetensors")


def _manifest_shapes(reference_dir: Path, name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (reference_dir / f"keys_{name}_unet.tsv").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = tuple(int(size) for size in shape.split(",") if size)
    return shapes


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + name: tensor for name, tensor in tensors.items()}


def _assert_same_tensors_fp32(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == torch.float32, name
        assert torch.equal(actual[name], tensor.float()), name


def _full_ldm_state(unet, vae, text) -> dict[str, torch.Tensor]:
    schedule = {"betas": torch.linspace(1e-4, 2e-2, 1000), "scale_arr": torch.ones(1400)}
    return {**schedule, **_prefixed(UNET_PREFIX, unet), **_prefixed(VAE_PREFIX, vae), **_prefixed(TEXT_PREFIX, text)}


# --- formats ---------------------------------------------------------------------------------------


def test_videocrafter2_lightning_golden(golden_dir, tiny_unets, tiny_vae, tiny_text):
    raw = read_checkpoint(golden_dir / "tiny_vc2_lightning.ckpt")
    assert raw.format == "lightning"
    assert raw.metadata == {"epoch": 7, "global_step": 12000}
    assert len(raw.state_dict) == 1781
    parts = split_components(raw.state_dict)
    _assert_same_tensors_fp32(parts.unet, tiny_unets["vc2"])
    _assert_same_tensors_fp32(parts.vae, tiny_vae)
    _assert_same_tensors_fp32(parts.text_encoder, tiny_text)
    assert len(parts.ignored) == 13 and set(parts.ignored) <= LDM_SCHEDULE_KEYS
    assert parts.unrecognised == []


def test_release_pickled_golden_routes_to_components(golden_dir, tiny_unets, tiny_vae, tiny_text):
    raw = read_checkpoint(golden_dir / "tiny_release_pickled.pt")
    assert raw.format == "pickled_module"
    parts = split_components(raw.state_dict)
    _assert_same_tensors_fp32(parts.unet, tiny_unets["hb07"])
    _assert_same_tensors_fp32(parts.vae, tiny_vae)
    _assert_same_tensors_fp32(parts.text_encoder, tiny_text)
    assert match_unet_preset(parts.unet) == "tiny-hb-0.7b"


def test_lightning_file_built_from_tiny_tensors(tmp_path, tiny_unets, tiny_vae, tiny_text):
    path = tmp_path / "stage1.ckpt"
    state = _full_ldm_state(tiny_unets["hb09"], tiny_vae, tiny_text)
    torch.save({"state_dict": state, "epoch": 2, "global_step": 40, "optimizer_states": []}, path)
    raw = read_checkpoint(path)
    assert (raw.format, raw.metadata) == ("lightning", {"epoch": 2, "global_step": 40})
    assert list(raw.state_dict) == list(state)
    _assert_same_tensors_fp32(split_components(raw.state_dict).unet, tiny_unets["hb09"])


class _TrainingHyperParameters:
    """A class that weights_only refuses, like Lightning's AttributeDict or an omegaconf config."""

    def __init__(self) -> None:
        self.learning_rate = 1e-5


def test_lightning_file_with_unknown_classes_falls_back_to_restricted_unpickler(tmp_path, tiny_unets):
    path = tmp_path / "with_hparams.ckpt"
    state = _prefixed(UNET_PREFIX, tiny_unets["hb07"])
    torch.save({"state_dict": state, "hyper_parameters": _TrainingHyperParameters(), "epoch": 1}, path)
    raw = read_checkpoint(path)
    assert (raw.format, raw.metadata) == ("lightning", {"epoch": 1})
    _assert_same_tensors_fp32(split_components(raw.state_dict).unet, tiny_unets["hb07"])


def test_deepspeed_file_strips_wrapper_prefix_and_drops_teacher(tmp_path, tiny_unets, tiny_vae):
    student = _prefixed("_forward_module." + UNET_PREFIX, tiny_unets["hb07"])
    vae = _prefixed("_forward_module." + VAE_PREFIX, tiny_vae)
    teacher = _prefixed("_forward_module.teacher_model.diffusion_model.", tiny_unets["vc2"])
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {**student, **teacher, **vae}, "global_steps": 300, "ds_version": "0.14.0"}, path)
    raw = read_checkpoint(path)
    assert raw.format == "deepspeed"
    assert raw.metadata == {"global_steps": 300}
    assert not any(name.startswith(("teacher", "_forward_module.")) for name in raw.state_dict)
    parts = split_components(raw.state_dict)
    _assert_same_tensors_fp32(parts.unet, tiny_unets["hb07"])
    _assert_same_tensors_fp32(parts.vae, tiny_vae)


def test_plain_state_dict_files(tmp_path, tiny_unets, tiny_vae, tiny_text):
    full = tmp_path / "full_state.pt"
    torch.save(_full_ldm_state(tiny_unets["vc2"], tiny_vae, tiny_text), full)
    raw = read_checkpoint(full)
    assert raw.format == "state_dict"
    _assert_same_tensors_fp32(split_components(raw.state_dict).text_encoder, tiny_text)

    bare = tmp_path / "unet_only.pth"
    torch.save(tiny_unets["hb09"], bare)
    parts = split_components(read_checkpoint(bare).state_dict)
    _assert_same_tensors_fp32(parts.unet, tiny_unets["hb09"])
    assert parts.vae == {} and parts.text_encoder == {} and parts.ignored == []


def test_legacy_non_zip_torch_file(tmp_path, tiny_unets):
    path = tmp_path / "old_style.pt"
    torch.save({"state_dict": _prefixed(UNET_PREFIX, tiny_unets["vc2"])}, path, _use_new_zipfile_serialization=False)
    raw = read_checkpoint(path)
    assert raw.format == "lightning"
    _assert_same_tensors_fp32(split_components(raw.state_dict).unet, tiny_unets["vc2"])

    refused = tmp_path / "old_style_module.pt"
    torch.save(torch.nn.Linear(2, 2), refused, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="old-style"):
        read_checkpoint(refused)


def test_safetensors_files(tmp_path, tiny_unets):
    path = tmp_path / "unet.safetensors"
    save_file(tiny_unets["hb07"], path, metadata={"preset": "tiny-hb-0.7b"})
    raw = read_checkpoint(path)
    assert (raw.format, raw.metadata) == ("safetensors", {"preset": "tiny-hb-0.7b"})
    parts = split_components(raw.state_dict)
    _assert_same_tensors_fp32(parts.unet, tiny_unets["hb07"])
    # The extension is not trusted: a safetensors file named .ckpt is still read as safetensors.
    renamed = tmp_path / "unet.ckpt"
    renamed.write_bytes(path.read_bytes())
    assert read_checkpoint(renamed).format == "safetensors"


def _bad_files(tmp_path: Path, golden_dir: Path) -> dict[str, Path]:
    files = {}
    files["missing"] = tmp_path / "does_not_exist.ckpt"
    files["folder"] = tmp_path / "a_folder"
    files["folder"].mkdir()
    files["empty"] = tmp_path / "empty.ckpt"
    files["empty"].write_bytes(b"")
    ckpt = (golden_dir / "tiny_vc2_lightning.ckpt").read_bytes()
    files["truncated_ckpt"] = tmp_path / "truncated.ckpt"
    files["truncated_ckpt"].write_bytes(ckpt[: len(ckpt) // 3])
    safetensors_bytes = (golden_dir / "tiny_vae.safetensors").read_bytes()
    files["truncated_safetensors"] = tmp_path / "truncated.safetensors"
    files["truncated_safetensors"].write_bytes(safetensors_bytes[: len(safetensors_bytes) // 2])
    files["short_header"] = tmp_path / "short_header.safetensors"
    files["short_header"].write_bytes(safetensors_bytes[:100])
    files["garbled_zip"] = tmp_path / "garbled.pt"
    files["garbled_zip"].write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    files["garbled_pickle"] = tmp_path / "garbled_legacy.pt"
    files["garbled_pickle"].write_bytes(b"\x80\x02" + b"\xff" * 64)
    files["text"] = tmp_path / "notes.ckpt"
    files["text"].write_text("these are not weights\n")
    files["image"] = tmp_path / "picture.safetensors"
    files["image"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    files["list"] = tmp_path / "a_list.pt"
    torch.save([1, 2, 3], files["list"])
    files["no_tensors"] = tmp_path / "optimizer_only.pt"
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 3}, files["no_tensors"])
    files["lightning_without_tensors"] = tmp_path / "empty_state.ckpt"
    torch.save({"state_dict": {}, "epoch": 3}, files["lightning_without_tensors"])
    return files


def test_unreadable_files_raise_one_line_checkpoint_errors(tmp_path, golden_dir):
    for kind, path in _bad_files(tmp_path, golden_dir).items():
        with pytest.raises(CheckpointError) as error:
            read_checkpoint(path)
        message = str(error.value)
        assert str(path) in message, kind
        assert "\n" not in message, kind
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "does_not_exist.ckpt")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="folder"):
        read_checkpoint(tmp_path / "a_folder")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_checkpoint(tmp_path / "notes.ckpt")


# --- component routing -----------------------------------------------------------------------------


def test_split_components_routing_and_casting():
    half = torch.ones(2, dtype=torch.float16)
    state = {
        "betas": torch.zeros(3),
        "logvar": torch.zeros(3),
        "model_ema.num_updates": torch.tensor(7, dtype=torch.int32),
        UNET_PREFIX + "input_blocks.0.0.weight": half,
        VAE_PREFIX + "encoder.conv_in.weight": half,
        TEXT_PREFIX + "token_embedding.weight": half,
        TEXT_PREFIX + "attn_mask": torch.zeros(77, 77),
        TEXT_PREFIX + "visual.proj": half,
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": half,  # an HF CLIP: not ours
        "lora_unet.down.weight": half,
        "time_cond_proj.weight": half,  # bare U-Net name
        "decoder.conv_out.bias": half,  # bare VAE name
        "ln_final.weight": half,  # bare open_clip name
        "step_counter": torch.tensor([5]),
    }
    parts = split_components(state)
    assert set(parts.unet) == {"input_blocks.0.0.weight", "time_cond_proj.weight"}
    assert set(parts.vae) == {"encoder.conv_in.weight", "decoder.conv_out.bias"}
    assert set(parts.text_encoder) == {"token_embedding.weight", "ln_final.weight"}
    assert all(t.dtype == torch.float32 for d in (parts.unet, parts.vae, parts.text_encoder) for t in d.values())
    assert parts.unrecognised == [
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "lora_unet.down.weight",
        "step_counter",
    ]
    assert set(parts.ignored) - set(parts.unrecognised) == {
        "betas",
        "logvar",
        "model_ema.num_updates",
        TEXT_PREFIX + "attn_mask",
        TEXT_PREFIX + "visual.proj",
    }

    kept = split_components(
        {"input_blocks.0.0.weight": half, "out.2.bias": torch.ones(2, dtype=torch.int64)}, dtype=None
    )
    assert kept.unet["input_blocks.0.0.weight"].dtype == torch.float16
    bf16 = split_components(
        {"out.2.bias": half, "out.0.weight": torch.ones(2, dtype=torch.int64)}, dtype=torch.bfloat16
    )
    assert bf16.unet["out.2.bias"].dtype == torch.bfloat16
    assert bf16.unet["out.0.weight"].dtype == torch.int64  # integers are never cast


# --- U-Net structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest, preset", FULL_PRESETS.items())
def test_infer_config_from_official_manifests(reference_dir, manifest, preset):
    shapes = _manifest_shapes(reference_dir, manifest)
    assert infer_unet_config(shapes) == UNET_PRESETS[preset]
    assert match_unet_preset(shapes) == preset


@pytest.mark.parametrize("option", ["frame_position_embedding", "frame_caption_embedding", "spatiotemporal_conv"])
def test_inferred_config_sees_the_added_modules(option):
    config = UNET_PRESETS["tiny-vc2"].replace(**{option: True})
    with torch.device("meta"):
        shapes = {name: tuple(t.shape) for name, t in UNet3D(config).state_dict().items()}
    assert infer_unet_config(shapes) == config


@pytest.mark.parametrize("structure, preset", TINY_STRUCTURES.items())
def test_inferred_config_rebuilds_a_strictly_loading_model(tiny_unets, structure, preset):
    weights = {name: tensor.float() for name, tensor in tiny_unets[structure].items()}
    config = infer_unet_config(weights)
    assert config == UNET_PRESETS[preset]
    assert config.num_head_channels == 8  # read from init_attn (8 heads x 8 = 64 wide)
    assert match_unet_preset(weights) == preset
    model = UNet3D(config)
    model.load_state_dict(weights, strict=True)
    check_state_dict_fits(model, weights)


def test_head_width_without_init_attn(reference_dir, tiny_unets):
    tiny = {k: v for k, v in tiny_unets["hb07"].items() if not k.startswith("init_attn.")}
    with pytest.raises(CheckpointError, match="num_head_channels"):
        infer_unet_config(tiny)  # widths 32/64: 64-wide heads do not fit, so it must be given
    assert infer_unet_config(tiny, num_head_channels=8).use_init_attn is False
    full = {k: v for k, v in _manifest_shapes(reference_dir, "hb07").items() if not k.startswith("init_attn.")}
    assert infer_unet_config(full).num_head_channels == 64
    with pytest.raises(CheckpointError, match="num_head_channels=8"):
        infer_unet_config(tiny_unets["hb07"], num_head_channels=16)


def test_infer_rejects_non_unet_state_dicts(tiny_vae, tiny_unets):
    with pytest.raises(CheckpointError, match="not a 3D U-Net"):
        infer_unet_config(tiny_vae)
    incomplete = {k: v for k, v in tiny_unets["vc2"].items() if not k.startswith("input_blocks.4.")}
    with pytest.raises(CheckpointError, match="not contiguous"):
        infer_unet_config(incomplete)
    assert match_unet_preset(tiny_vae) is None


def test_fit_errors_name_the_problem_and_the_right_preset(reference_dir):
    teacher = _manifest_shapes(reference_dir, "vc2")
    student_model = expected_unet_shapes(UNET_PRESETS["hb-0.7b"])
    with pytest.raises(CheckpointError) as error:
        check_state_dict_fits(student_model, teacher, component="hb-0.7b U-Net")
    message = str(error.value)
    assert "\n" not in message
    assert "missing key(s) (time_cond_proj.weight" in message
    assert "unexpected key(s)" in message and "shape mismatch(es)" in message
    assert "'vc2'" in message

    # One tensor of the wrong width, one missing and one extra key; the file is no preset.
    edited = dict(_manifest_shapes(reference_dir, "hb07"))
    edited["out.2.weight"] = (8, 320, 3, 3)
    del edited["time_embed.0.bias"]
    edited["time_embed.9.weight"] = (1,)
    with pytest.raises(CheckpointError) as error:
        check_state_dict_fits(student_model, edited)
    message = str(error.value)
    assert "1 missing key(s) (time_embed.0.bias)" in message
    assert "1 unexpected key(s) (time_embed.9.weight)" in message
    assert "out.2.weight: file (8, 320, 3, 3) vs model (4, 320, 3, 3)" in message
    assert check_state_dict_fits(student_model, _manifest_shapes(reference_dir, "hb07")) is None
