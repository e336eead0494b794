"""LoRA on the U-Net (peft): coverage, init, per-layer rank and dropout, merging and merge-and-save."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

pytest.importorskip("peft")

from peft.tuners.lora import LoraLayer

from hummingbird_t2v.checkpoints.folder import load_component
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.training import checkpointing as ckpt
from hummingbird_t2v.training.lora import (
    ADAPTER,
    add_lora,
    has_lora,
    lora_layer_names,
    merge_and_save,
    merge_lora,
    trainable_lora_parameters,
)

PRESET = "tiny-hb-0.9b"
# Smaller still for the merge checks (fewer layers to inject and merge): one attention level, no middle block.
MICRO = UNetConfig(
    model_channels=32,
    channel_mult=(1, 2),
    attention_resolutions=(2,),
    num_head_channels=16,
    context_dim=32,
    num_res_blocks=1,
    use_middle_block=False,
    time_cond_proj_dim=256,
)


def _unet(seed: int = 0, config: UNetConfig = MICRO) -> UNet3D:
    """A small student with every weight non-zero (the output conv is zero-initialised)."""
    torch.manual_seed(seed)
    unet = UNet3D(config).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return unet


def _inputs(seed: int = 1) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, 4, 2, 8, 8), generator=g)
    context = torch.randn((1, 5, 32), generator=g)
    cond = torch.randn((1, 256), generator=g)
    return (x, torch.tensor([321]), context), {"fps": 8, "timestep_cond": cond}


def _float64(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The inputs in float64: merge checks compare in float64, where CPU BLAS noise (~1e-7 per matmul
    in float32, depending on memory alignment) does not get amplified through the random network."""
    cast = lambda v: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
    return tuple(cast(v) for v in args), {k: cast(v) for k, v in kwargs.items()}


def _randomise_lora(unet: nn.Module, seed: int = 2) -> None:
    """Non-zero up weights, so the LoRA branches change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in unet.modules():
            if isinstance(layer, LoraLayer):
                up = layer.lora_B[ADAPTER].weight
                up.copy_(0.02 * torch.randn(up.shape, generator=g))


def test_lora_on_every_linear_and_conv_with_the_released_init():
    unet = _unet(config=get_unet_preset(PRESET))
    targets = lora_layer_names(unet)
    add_lora(unet)

    layers = {name: m for name, m in unet.named_modules() if isinstance(m, LoraLayer)}
    # The official injector puts 370 LoRA layers into the tiny golden 0.9B student (reference README).
    assert sorted(layers) == sorted(targets) and len(layers) == 370
    conv1d = [m for m in unet.modules() if isinstance(m, nn.Conv1d)]  # init_attn's projections: no LoRA
    assert len(conv1d) == 2 and all(not p.requires_grad for m in conv1d for p in m.parameters())
    for name, layer in layers.items():
        base = layer.get_base_layer()
        in_dim, out_dim = (base.in_features, base.out_features) if isinstance(base, nn.Linear) else (base.in_channels, base.out_channels)
        r = layer.r[ADAPTER]
        assert r == min(64, in_dim, out_dim), name
        assert layer.scaling[ADAPTER] == 1.0, name
        assert torch.count_nonzero(layer.lora_B[ADAPTER].weight) == 0, name
        dropout = layer.lora_dropout[ADAPTER]
        if isinstance(base, nn.Conv3d):
            assert isinstance(dropout, nn.Identity), name
        else:
            assert isinstance(dropout, nn.Dropout) and dropout.p == 0.1, name
    # down ~ N(0, 1/r): check the spread on the widest Linear.
    widest = layers["time_cond_proj"]
    assert abs(widest.lora_A[ADAPTER].weight.std().item() * widest.r[ADAPTER] - 1.0) < 0.05

    trainable = [p for p in unet.parameters() if p.requires_grad]
    assert len(trainable) == 2 * 370
    assert {id(p) for p in trainable} == {id(p) for p in trainable_lora_parameters(unet)}


def test_fresh_lora_leaves_the_output_unchanged():
    unet = _unet().double()
    args, kwargs = _float64(*_inputs())
    with torch.no_grad():
        before = unet(*args, **kwargs)
        add_lora(unet)
        after = unet(*args, **kwargs)
    # Zero up weights add exact zeros. Not bitwise all the same: peft's layers see their inputs at other
    # memory alignments, which changes CPU BLAS rounding (~1e-7 per matmul in float32, amplified to
    # ~1e-4 by these random networks), hence float64.
    torch.testing.assert_close(after, before, atol=1e-10, rtol=0)


def test_lora_settings_are_validated_and_applied():
    unet = _unet()
    with pytest.raises(ConfigError, match="rank"):
        add_lora(unet, rank=0)
    with pytest.raises(ConfigError, match="dropout"):
        add_lora(unet, dropout=1.0)
    add_lora(unet, rank=8, alpha=16.0, conv3d_dropout=0.2)
    for layer in unet.modules():
        if isinstance(layer, LoraLayer):
            assert layer.r[ADAPTER] <= 8
            assert layer.scaling[ADAPTER] == pytest.approx(2.0)  # alpha / rank, also on clipped layers
            if isinstance(layer.get_base_layer(), nn.Conv3d):
                assert layer.lora_dropout[ADAPTER].p == 0.2
    with pytest.raises(ConfigError, match="already has LoRA"):
        add_lora(unet)


def test_merged_model_equals_the_lora_model():
    unet = add_lora(_unet()).double()
    _randomise_lora(unet)
    args, kwargs = _float64(*_inputs())
    with torch.no_grad():
        with_lora = unet(*args, **kwargs)
        plain = _unet().double()(*args, **kwargs)
        merged_unet = merge_lora(unet)
        merged = merged_unet(*args, **kwargs)
    assert (with_lora - plain).abs().max() > 1e-2  # the LoRA branches do change the output
    torch.testing.assert_close(merged, with_lora, atol=1e-5, rtol=0)
    assert not has_lora(merged_unet) and isinstance(merged_unet, UNet3D)
    assert list(merged_unet.state_dict()) == list(UNet3D(MICRO).state_dict())


def _lora_state_dict(seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    unet = add_lora(_unet(seed))
    _randomise_lora(unet, seed + 10)
    return unet, {k: v.contiguous() for k, v in unet.state_dict().items()}


def test_merge_and_save_from_a_training_run(tmp_path):
    unet, state = _lora_state_dict()
    step = tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(10)
    step.mkdir(parents=True)
    save_file(state, str(step / ckpt.MODEL_FILE))
    (step / ckpt.STATE_FILE).write_text("{}")

    out = merge_and_save(tmp_path / "run", tmp_path / "merged")
    loaded = load_component(out, lambda config: UNet3D(UNetConfig.from_dict(config)))
    # The config was inferred from the weights alone: same structure.
    assert loaded.config == MICRO
    # The same weights as merging in memory (whose output equals the LoRA model's, tested above).
    expected = merge_lora(unet).state_dict()
    assert list(loaded.state_dict()) == list(expected)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=0, msg=lambda m, n=name: f"{n}: {m}")

    with pytest.raises(ConfigError, match="not empty"):
        merge_and_save(tmp_path / "run", out)


def test_merge_and_save_from_a_half_precision_file_keeps_its_dtype(tmp_path):
    _, state = _lora_state_dict(seed=3)
    half = {k: v.half() for k, v in state.items()}
    path = tmp_path / "lora_unet.safetensors"
    save_file(half, str(path))
    out = merge_and_save(path, tmp_path / "merged", config=MICRO)
    loaded = load_component(out, lambda config: UNet3D(UNetConfig.from_dict(config)))
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}

    # Expected: the same fp16 values merged in float32, then rounded to fp16 once.
    reference = add_lora(UNet3D(MICRO))
    reference.load_state_dict({k: v.float() for k, v in half.items()})
    expected = merge_lora(reference).half().state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-3, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


def test_merge_and_save_rejects_weights_without_lora(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in _unet().state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match="no LoRA"):
        merge_and_save(path, tmp_path / "out")
    with pytest.raises(ConfigError, match="does not exist"):
        merge_and_save(tmp_path / "missing", tmp_path / "out")
