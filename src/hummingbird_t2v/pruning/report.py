"""Parameters and FLOPs of a U-Net structure, whole and per block, counted on the meta device.

FLOPs are those of one forward pass at the official size: batch 1, 16 frames, 320x512 pixels (40x64
latents), 77 text tokens, counted with `torch.utils.flop_counter` (matmuls, convolutions and attention
as 2 x multiply-accumulates; spec/cost-model.md). Nothing is allocated, but the counter's per-operator
work costs a few seconds per structure, so each structure is counted once per process (the recipe
and the analysis ask for the teacher's cost several times).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from hummingbird_t2v.models.unet import UNet3D, count_parameters
from hummingbird_t2v.models.unet_blocks import Upsample
from hummingbird_t2v.models.unet_config import UNetConfig

OFFICIAL_FRAMES = 16
OFFICIAL_LATENT_SIZE = (40, 64)  # 320 x 512 pixels through the VAE's factor 8
OFFICIAL_TOKENS = 77


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.params - other.params, self.flops - other.flops)


ZERO_COST = Cost(0, 0)


@dataclass(frozen=True)
class _Count:
    model: UNet3D  # on the meta device: structure and parameter shapes only
    total_flops: int
    module_flops: dict[str, int]  # "input_blocks.N", "input_blocks.N.L", "middle_block", ...


@lru_cache(maxsize=32)
def _count_forward(config: UNetConfig) -> _Count:
    with torch.device("meta"):
        model = UNet3D(config).eval()
        x = torch.empty(1, config.in_channels, OFFICIAL_FRAMES, *OFFICIAL_LATENT_SIZE)
        context = torch.empty(1, OFFICIAL_TOKENS, config.context_dim)
        cond = torch.empty(1, config.time_cond_proj_dim) if config.time_cond_proj_dim else None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x, torch.tensor([999]), context, fps=8, timestep_cond=cond)
    module_flops = {name.removeprefix("UNet3D."): sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    return _Count(model, counter.get_total_flops(), module_flops)


def unet_cost(config: UNetConfig) -> Cost:
    """Parameters and forward FLOPs (official size) of `UNet3D(config)`."""
    count = _count_forward(config)
    return Cost(count_parameters(count.model), count.total_flops)


@dataclass(frozen=True)
class CostBreakdown:
    total: Cost
    blocks: dict[str, Cost]  # "input_blocks.N", "output_blocks.N" (without its upsampler), "middle_block"


def block_costs(config: UNetConfig) -> CostBreakdown:
    """Per removable unit: what the U-Net loses in parameters and FLOPs when that unit is left out.

    A decoder unit's upsampler is excluded: it belongs to the level and stays when the unit goes.
    """
    count = _count_forward(config)
    model, flops = count.model, count.module_flops
    blocks: dict[str, Cost] = {}
    for group in ("input_blocks", "output_blocks"):
        for index, stage in enumerate(getattr(model, group)):
            name = f"{group}.{index}"
            cost = Cost(count_parameters(stage), flops.get(name, 0))
            for layer, module in enumerate(stage):
                if isinstance(module, Upsample):
                    cost -= Cost(count_parameters(module), flops.get(f"{name}.{layer}", 0))
            blocks[name] = cost
    if model.middle_block is not None:
        blocks["middle_block"] = Cost(count_parameters(model.middle_block), flops.get("middle_block", 0))
    return CostBreakdown(Cost(count_parameters(model), count.total_flops), blocks)


def format_cost_table(rows: list[tuple[str, Cost]], reference: Cost | None = None) -> str:
    """Aligned text table: name, parameters, GFLOPs per forward, and ratios to `reference` (the first row)."""
    reference = reference or rows[0][1]
    lines = [f"{'U-Net':<28}{'parameters':>16}{'GFLOPs/forward':>18}{'params':>9}{'FLOPs':>9}"]
    for name, cost in rows:
        lines.append(
            f"{name:<28}{cost.params:>16,}{cost.flops / 1e9:>18,.1f}"
            f"{cost.params / reference.params:>9.1%}{cost.flops / reference.flops:>9.1%}"
        )
    lines.append(f"(FLOPs of one forward pass at {OFFICIAL_FRAMES}x{OFFICIAL_LATENT_SIZE[0] * 8}x{OFFICIAL_LATENT_SIZE[1] * 8}, batch 1)")
    return "\n".join(lines)
