"""HummingbirdPipeline: loading every checkpoint format, sampling, outputs, saving, errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline

SMALL = dict(num_frames=3, height=64, width=64)
TINY_TEXT_HEADS = 4  # the tiny text tower's width (32) does not reveal its head count


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def lightning_state_dict(golden_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(golden_dir / "tiny_vc2_lightning.ckpt", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def student(golden_dir: Path) -> HummingbirdPipeline:
    return HummingbirdPipeline.from_pretrained(golden_dir / "tiny_release_pickled.pt", text_num_heads=TINY_TEXT_HEADS)


@pytest.fixture(scope="module")
def teacher(golden_dir: Path) -> HummingbirdPipeline:
    return HummingbirdPipeline.from_pretrained(golden_dir / "tiny_vc2_lightning.ckpt", text_num_heads=TINY_TEXT_HEADS)


def _unet_output(pipe: HummingbirdPipeline, io: dict[str, torch.Tensor]) -> torch.Tensor:
    cond = io["timestep_cond"].clone() if "timestep_cond" in io else None
    with torch.no_grad():
        return pipe.unet(io["x"].clone(), io["timesteps"].clone(), io["context"].clone(), fps=io["fps"].clone(), timestep_cond=cond)


def test_release_pickle_loads_into_a_student_that_matches_the_golden(student, golden_dir):
    assert student.config.sampler == "consistency"
    io = load_file(golden_dir / "tiny_hb07_io.safetensors")
    torch.testing.assert_close(_unet_output(student, io), io["y"], atol=1e-4, rtol=1e-4)
    text = load_file(golden_dir / "tiny_openclip_text_io.safetensors")
    with torch.no_grad():
        z = student.text_encoder(text["tokens"])
    torch.testing.assert_close(z, text["z_penultimate"], atol=1e-4, rtol=1e-4)


def test_lightning_checkpoint_loads_into_a_teacher_that_matches_the_golden(teacher, golden_dir):
    assert teacher.config.sampler == "ddim"
    assert teacher.config.defaults.num_inference_steps == 50
    io = load_file(golden_dir / "tiny_vc2_io.safetensors")
    torch.testing.assert_close(_unet_output(teacher, io), io["y"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("container", ["safetensors", "deepspeed", "state_dict"])
def test_other_formats_give_the_same_weights(container, lightning_state_dict, teacher, tmp_path):
    if container == "safetensors":
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in lightning_state_dict.items()}, str(path))
    elif container == "deepspeed":
        path = tmp_path / "mp_rank_00_model_states.pt"
        module = {f"_forward_module.{k}": v for k, v in lightning_state_dict.items()}
        module["_forward_module.teacher_model.diffusion_model.out.2.bias"] = torch.zeros(4)
        torch.save({"module": module}, path)
    else:
        path = tmp_path / "weights.pt"
        torch.save(dict(lightning_state_dict), path)
    pipe = HummingbirdPipeline.from_pretrained(path, text_num_heads=TINY_TEXT_HEADS)
    for name in ("unet", "vae", "text_encoder"):
        loaded, reference = getattr(pipe, name).state_dict(), getattr(teacher, name).state_dict()
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference), name


def test_student_sampling_is_seeded_and_outputs_every_type(student):
    first = student("a red ball bouncing", **SMALL, generator=_generator(1), progress=False)
    again = student("a red ball bouncing", **SMALL, generator=_generator(1), progress=False)
    other = student("a red ball bouncing", **SMALL, generator=_generator(2), progress=False)
    assert first.frames.shape == (1, 3, 64, 64, 3)
    assert first.frames.min() >= 0.0 and first.frames.max() <= 1.0
    assert (first.frames == again.frames).all()
    assert not (first.frames == other.frames).all()

    pt = student(["a", "b"], **SMALL, generator=_generator(1), output_type="pt", progress=False).frames
    assert pt.shape == (2, 3, 3, 64, 64)
    latent = student("a", **SMALL, generator=_generator(1), output_type="latent", progress=False).frames
    assert latent.shape == (1, 4, 3, 8, 8)
    pil = student("a", **SMALL, generator=_generator(1), output_type="pil", progress=False).frames
    assert len(pil) == 1 and len(pil[0]) == 3 and pil[0][0].size == (64, 64)


def test_student_makes_one_unet_pass_per_step_and_teacher_two(student, teacher):
    calls = []
    handles = [p.unet.register_forward_hook(lambda m, a, kw, out: calls.append(m), with_kwargs=True) for p in (student, teacher)]
    try:
        student("a", **SMALL, num_inference_steps=4, output_type="latent", progress=False)
        assert len(calls) == 4
        calls.clear()
        teacher("a", **SMALL, num_inference_steps=2, output_type="latent", progress=False)
        assert len(calls) == 4  # conditional + unconditional per DDIM step
    finally:
        for handle in handles:
            handle.remove()


def test_guidance_scale_changes_the_student_output(student):
    low = student("a", **SMALL, guidance_scale=3.0, generator=_generator(), output_type="latent", progress=False).frames
    high = student("a", **SMALL, guidance_scale=12.0, generator=_generator(), output_type="latent", progress=False).frames
    assert not torch.allclose(low, high)


def test_gamma_comes_from_the_model_config_unless_the_call_sets_it(student, teacher, tmp_path):
    kwargs = dict(**SMALL, output_type="latent", progress=False)
    lcm = student("a", generator=_generator(), **kwargs).frames
    assert torch.equal(lcm, student("a", gamma=1.0, generator=_generator(), **kwargs).frames)
    deterministic = student("a", gamma=0.0, generator=_generator(), **kwargs).frames
    assert not torch.allclose(lcm, deterministic)
    # Gamma 0 draws no noise after the start, so a fixed start gives the same video whatever the generator.
    start = torch.randn(lcm.shape, generator=_generator(7))
    assert torch.equal(
        student("a", gamma=0.0, latents=start, generator=_generator(1), **kwargs).frames,
        student("a", gamma=0.0, latents=start, generator=_generator(2), **kwargs).frames,
    )
    folder = student.save_pretrained(tmp_path / "gamma0")
    reloaded = HummingbirdPipeline.from_pretrained(folder)
    reloaded.config = dataclasses.replace(reloaded.config, consistency_gamma=0.0)
    reloaded.save_pretrained(tmp_path / "saved-gamma0")
    saved = HummingbirdPipeline.from_pretrained(tmp_path / "saved-gamma0")
    assert saved.config.consistency_gamma == 0.0
    torch.testing.assert_close(saved("a", generator=_generator(), **kwargs).frames, deterministic, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="samples with DDIM"):
        teacher("a", gamma=0.5, **kwargs)


def test_save_and_reload_gives_identical_videos(student, tmp_path):
    folder = student.save_pretrained(tmp_path / "tiny-hb07")
    assert {p.name for p in folder.iterdir()} == {"model_index.json", "unet", "vae", "text_encoder"}
    assert (folder / "unet" / "config.json").is_file() and (folder / "unet" / "model.safetensors").is_file()
    reloaded = HummingbirdPipeline.from_pretrained(folder)
    kwargs = dict(**SMALL, output_type="latent", progress=False)
    torch.testing.assert_close(
        reloaded("a", generator=_generator(), **kwargs).frames, student("a", generator=_generator(), **kwargs).frames, atol=0, rtol=0
    )
    with pytest.raises(ConfigError, match="already exists"):
        student.save_pretrained(folder)


def test_bfloat16_pipeline_runs(student, tmp_path):
    folder = student.save_pretrained(tmp_path / "bf16")
    pipe = HummingbirdPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16
    frames = pipe("a", **SMALL, generator=_generator(), progress=False).frames
    assert frames.shape == (1, 3, 64, 64, 3) and torch.isfinite(torch.from_numpy(frames)).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt=""), "empty"),
        (dict(prompt="   "), "empty"),
        (dict(prompt=[]), "no prompt"),
        (dict(prompt="a", height=60), "multiple of 64"),
        (dict(prompt="a", width=100), "multiple of 64"),
        (dict(prompt="a", num_frames=0), "num_frames"),
        (dict(prompt="a", num_inference_steps=0), "num_inference_steps"),
        (dict(prompt="a", output_type="mp4"), "output_type"),
    ],
)
def test_bad_arguments_are_named(student, kwargs, message):
    call = {**SMALL, "progress": False, **kwargs}
    with pytest.raises(ConfigError, match=message):
        student(call.pop("prompt"), **call)


def test_wrong_preset_names_the_mismatch(golden_dir):
    with pytest.raises(CheckpointError, match="tiny-hb-0.9b.*missing key"):
        HummingbirdPipeline.from_pretrained(golden_dir / "tiny_release_pickled.pt", model="tiny-hb-0.9b", text_num_heads=TINY_TEXT_HEADS)


def test_a_unet_only_file_is_refused_with_advice(golden_dir, tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file(load_file(golden_dir / "tiny_hb07_unet.safetensors"), str(path))
    with pytest.raises(CheckpointError, match="no vae weights"):
        HummingbirdPipeline.from_pretrained(path)
