"""UNet3D against the outputs and per-block activations of the official tiny U-Nets (reference/golden)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from hummingbird_t2v.compat import build_unet_from_official
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset

# golden file stem -> our preset
MODELS = {"vc2": "tiny-vc2", "hb09": "tiny-hb-0.9b", "hb07": "tiny-hb-0.7b"}
TOL = dict(atol=1e-4, rtol=1e-4)


def _build(name: str, builder: str, golden_dir) -> UNet3D:
    if builder == "preset":
        return UNet3D(get_unet_preset(MODELS[name]))
    official = json.loads((golden_dir / "tiny_configs.json").read_text())["unet"][name]
    return build_unet_from_official({"target": official["target"], "params": official["params"]})


@pytest.mark.parametrize("builder", ["preset", "compat"])
@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_matches_official_outputs_and_activations(name, builder, golden_dir):
    weights = {k: v.float() for k, v in load_file(golden_dir / f"tiny_{name}_unet.safetensors").items()}
    # Clone: tensors straight from safetensors have odd alignment, which changes BLAS paths (README).
    io = {k: v.clone() for k, v in load_file(golden_dir / f"tiny_{name}_io.safetensors").items()}
    model = _build(name, builder, golden_dir).eval()
    model.load_state_dict(weights, strict=True)

    captured: dict[str, torch.Tensor] = {}
    act_keys = [k for k in io if k.startswith("act.")]
    assert len(act_keys) > 10
    hooks = [
        model.get_submodule(key.removeprefix("act.")).register_forward_hook(
            lambda _module, _inputs, output, key=key: captured.__setitem__(key, output)
        )
        for key in act_keys
    ]
    kwargs = {"timestep_cond": io["timestep_cond"]} if "timestep_cond" in io else {}
    y = model(io["x"], io["timesteps"], context=io["context"], fps=io["fps"], **kwargs)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(y, io["y"], **TOL)

    for key in act_keys:
        expected = io[key]
        # Per-frame activations are stored for sample 0 only: its first t rows of the (b*t, c, h, w) layout.
        actual = captured[key][: expected.shape[0]]
        torch.testing.assert_close(actual, expected, **TOL, msg=lambda m, k=key: f"{k}: {m}")

    y_int_fps = model(io["x"], io["timesteps"], context=io["context"], fps=8, **kwargs)
    torch.testing.assert_close(y_int_fps, io["y_fps_int8"], **TOL)
