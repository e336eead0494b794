"""compat.build_unet_from_official: official {"target", "params"} entries -> UNet3D."""

from __future__ import annotations

import json
import re

import pytest
import torch

from hummingbird_t2v.compat import build_unet_from_official, unet_config_from_official
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet_config import get_unet_preset

TEACHER = "lvdm.modules.networks.openaimodel3d.UNetModel"
HB07 = "lvdm.modules.networks.openaimodel3d_t2v_jun_07B.UNetModel"

# The structural flags of the official inference yamls (everything else at its default).
OFFICIAL_FLAGS = dict(
    use_linear=True,
    use_checkpoint=True,
    temporal_conv=True,
    temporal_attention=True,
    temporal_selfatt_only=True,
    use_relative_position=False,
    use_causal_attention=False,
    temporal_length=16,
    addition_attention=True,
    fps_cond=True,
)


def _official(target: str = TEACHER, **params) -> dict:
    base = dict(
        in_channels=4,
        out_channels=4,
        model_channels=32,
        attention_resolutions=[4, 2, 1],
        num_res_blocks=1,
        channel_mult=[1, 1, 2, 2],
        num_head_channels=8,
        context_dim=32,
        **OFFICIAL_FLAGS,
    )
    return {"target": target, "params": base | params}


@pytest.mark.parametrize("name, preset", [("vc2", "tiny-vc2"), ("hb09", "tiny-hb-0.9b"), ("hb07", "tiny-hb-0.7b")])
def test_tiny_golden_configs_map_to_the_tiny_presets(name, preset, golden_dir):
    official = json.loads((golden_dir / "tiny_configs.json").read_text())["unet"][name]
    assert unet_config_from_official(official) == get_unet_preset(preset)


def test_full_size_yaml_values_map_to_the_full_presets():
    full = dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_head_channels=64, context_dim=1024)
    assert unet_config_from_official(_official(num_res_blocks=2, **full)) == get_unet_preset("vc2")
    hb07 = _official(HB07, time_cond_proj_dim=256, **full)
    assert unet_config_from_official(hb07) == get_unet_preset("hb-0.7b")


def test_another_size_builds_runs_and_uses_official_names():
    config = _official(
        HB07,
        model_channels=64,
        channel_mult=[1, 2, 3],
        num_res_blocks=3,
        attention_resolutions=[2],
        num_head_channels=16,
        context_dim=24,
        transformer_depth=2,
        temporal_length=7,
        time_cond_proj_dim=12,
    )
    model = build_unet_from_official(config).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    pattern = re.compile(
        r"(time_embed|fps_embedding)\.[02]\.(weight|bias)"
        r"|time_cond_proj\.weight"
        r"|out\.[02]\.(weight|bias)"
        r"|input_blocks\.0\.0\.(weight|bias)"
        r"|(input_blocks|output_blocks)\.\d+\.\d+\.(op|conv)\.(weight|bias)"
        r"|(input_blocks|output_blocks)\.\d+\.0\.(in_layers\.[02]|emb_layers\.1|out_layers\.[03]|skip_connection"
        r"|temopral_conv\.conv1\.[02]|temopral_conv\.conv[234]\.[03])\.(weight|bias)"
        r"|(input_blocks\.\d+\.[12]|output_blocks\.\d+\.[12]|init_attn\.0)\.(norm|proj_in|proj_out"
        r"|transformer_blocks\.[01]\.(attn[12]\.to_[qkv]|attn[12]\.to_out\.0|ff\.net\.0\.proj|ff\.net\.2|norm[123]))"
        r"\.(weight|bias)"
    )
    assert [k for k in shapes if not pattern.fullmatch(k)] == []
    assert not any(k.startswith("middle_block") for k in shapes)  # 0.7B class

    # 1 input conv + 3 levels x 3 ResBlocks + 2 Downsamples; decoder 3 levels x 4.
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("input_blocks")} == set(range(12))
    assert {int(k.split(".")[1]) for k in shapes if k.startswith("output_blocks")} == set(range(12))
    assert shapes["time_cond_proj.weight"] == (64, 12)
    assert shapes["init_attn.0.proj_in.weight"] == (8 * 16, 64, 1)  # 8 heads x num_head_channels, Conv1d
    assert shapes["input_blocks.4.0.op.weight"] == (64, 64, 3, 3)  # Downsamples follow each level's 3 ResBlocks
    assert shapes["input_blocks.8.0.op.weight"] == (128, 128, 3, 3)
    # attention only at ds=2 (level 1, width 128): input blocks 5-7, output blocks 4-7
    with_attention = {k.split(".")[0] + "." + k.split(".")[1] for k in shapes if ".transformer_blocks." in k}
    assert with_attention == {"init_attn.0"} | {f"input_blocks.{i}" for i in (5, 6, 7)} | {
        f"output_blocks.{i}" for i in (4, 5, 6, 7)
    }
    assert shapes["input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight"] == (128, 24)  # text context
    assert shapes["input_blocks.5.2.transformer_blocks.0.attn2.to_k.weight"] == (128, 128)  # temporal self
    # transformer_depth=2 applies to spatial transformers and init_attn; temporal ones keep
    # temporal_transformer_depth (default 1), as in the official constructor.
    assert "init_attn.0.transformer_blocks.1.norm3.weight" in shapes
    assert not any(re.match(r"(input|output)_blocks\.\d+\.2\.transformer_blocks\.1\.", k) for k in shapes)
    assert shapes["input_blocks.5.0.skip_connection.weight"] == (128, 64, 1, 1)
    assert shapes["input_blocks.9.0.skip_connection.weight"] == (192, 128, 1, 1)
    assert shapes["output_blocks.0.0.in_layers.2.weight"] == (192, 384, 3, 3)
    assert shapes["output_blocks.3.1.conv.weight"] == (192, 192, 3, 3)  # Upsample after level 2 (no attention)
    assert shapes["output_blocks.7.3.conv.weight"] == (128, 128, 3, 3)  # after level 1 (ResBlock, S, T, Up)
    assert shapes["output_blocks.11.0.in_layers.2.weight"] == (64, 128, 3, 3)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 12, generator=g)
    with torch.no_grad():
        context = torch.randn(1, 6, 24, generator=g)
        y = model(x, torch.tensor([10]), context=context, fps=8, timestep_cond=torch.randn(1, 12, generator=g))
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"use_relative_position": True}, "use_relative_position"),
        ({"use_scale_shift_norm": True}, "use_scale_shift_norm"),
        ({"dims": 3}, "dims"),
        ({"use_linear": False}, "use_linear"),
        ({"use_causal_attention": True}, "use_causal_attention"),
        ({"temporal_conv": False}, "temporal_conv"),
        ({"resblock_updown": True}, "resblock_updown"),
        ({"num_head_channels": -1, "num_heads": 4}, "num_head_channels"),
    ],
)
def test_unsupported_flags_name_the_flag(change, flag):
    with pytest.raises(ConfigError, match=flag):
        build_unet_from_official(_official(**change))


def test_omitted_flag_uses_the_official_default():
    config = _official()
    del config["params"]["use_relative_position"]  # official default: True -> unsupported
    with pytest.raises(ConfigError, match="use_relative_position.*official default"):
        build_unet_from_official(config)


def test_bad_targets_and_arguments_raise_config_error():
    with pytest.raises(ConfigError, match="unsupported U-Net target"):
        build_unet_from_official(_official("lvdm.modules.networks.openaimodel2d.UNetModel"))
    with pytest.raises(ConfigError, match="foo_bar"):
        build_unet_from_official(_official(foo_bar=1))
    config = _official()
    del config["params"]["model_channels"]
    with pytest.raises(ConfigError, match="model_channels"):
        build_unet_from_official(config)
    with pytest.raises(ConfigError, match="target"):
        build_unet_from_official({"params": {}})


def test_optional_parts_follow_their_official_flags():
    plain = build_unet_from_official(_official(addition_attention=False, fps_cond=False, use_checkpoint=False))
    keys = plain.state_dict().keys()
    assert not any(k.startswith(("init_attn", "fps_embedding", "time_cond_proj")) for k in keys)
    assert plain.gradient_checkpointing is False
    assert build_unet_from_official(_official()).gradient_checkpointing is True
    x = torch.randn(1, 4, 2, 8, 8)
    with torch.no_grad():
        assert plain(x, 3, context=torch.randn(1, 4, 32)).shape == x.shape
