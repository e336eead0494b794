"""FLOPs of one full-size forward pass, counted on the meta device, against the official classes' counts.

Setting (spec/cost-model.md): batch 1, 16 frames, latent 4x40x64, context 77x1024,
`torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and attention as 2*MAC).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset

# Totals measured on the official classes (spec/flops_raw.json, keys *_T16).
OFFICIAL_TOTALS = {
    "vc2": ("vc2_T16", 12_581_410_897_920),
    "hb-0.9b": ("hb09_T16", 8_182_729_113_600),
    "hb-0.7b": ("hb07_T16", 7_961_767_280_640),
}


@pytest.mark.parametrize("preset", sorted(OFFICIAL_TOTALS))
def test_forward_flops_equal_the_official_count(preset, reference_dir):
    config = get_unet_preset(preset)
    with torch.device("meta"):
        model = UNet3D(config).eval()
        x = torch.empty(1, 4, 16, 40, 64)
        context = torch.empty(1, 77, 1024)
        kwargs = {"timestep_cond": torch.empty(1, config.time_cond_proj_dim)} if config.time_cond_proj_dim else {}
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            y = model(x, torch.tensor([999]), context, fps=8, **kwargs)
    assert y.shape == x.shape and y.is_meta

    key, total = OFFICIAL_TOTALS[preset]
    assert counter.get_total_flops() == total

    # Per top-level block as well, where the raw numbers are available.
    raw_file = reference_dir.parent / "spec" / "flops_raw.json"
    if raw_file.is_file():
        groups = json.loads(raw_file.read_text())[key]["groups"]
        counts = counter.get_flop_counts()
        ours = {group: sum(counts.get(f"UNet3D.{group}", {}).values()) for group in groups}
        assert ours == groups
