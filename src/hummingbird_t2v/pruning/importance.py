"""Block importance: how much the teacher's guided prediction changes when one unit is skipped, and the
layout that keeps the most important units within a parameter or FLOP budget.

**What "skipping" means** (chosen so that skipped units compose into exactly the student that the
weight transfer builds; docs/pruning.md):

* an *encoder* unit is replaced by the identity: its input passes on, and the skip feature it would
  have pushed is that same input. The decoder therefore still receives one skip per unit, and the
  unit that consumed this skip now sees the previous feature of the level, exactly as in a student
  that lacks the unit. Only units whose input and output widths agree can be skipped; the first unit
  of a level that widens the features cannot (every level keeps at least one unit anyway);
* a *decoder* unit still pops its skip feature, but discards it and passes the features from below
  through unchanged; if the unit carries the level's upsampler, the upsampler still runs. Units whose
  output width differs from the features entering them (the first unit of a level that narrows the
  features) cannot be skipped;
* the *middle block* is replaced by the identity.

Skipping encoder unit 2 and decoder unit 10 of the VideoCrafter2 teacher, for example, gives a network
identical to the student whose level 0 is filled from teacher units 1 and 9, 11 (tested).

The score of a unit is the relative change of the CFG-guided noise prediction ε(∅) + s·(ε(c) − ε(∅))
on a calibration batch, mean((ε_skip − ε)²) / mean(ε²): the quantity the stage-1 student is trained to
reproduce (`target="guided"`). With `target="caption"` it is the relative change of the caption's part
ε(c) − ε(∅) alone: the guided prediction is dominated by what any denoiser must do regardless of the
prompt, so a unit that carries what the caption asks for (the colour of an object, say) can score low
there and high here. Scores are measured one unit at a time and added up when choosing a layout, which ignores
interactions; the chosen layout's real change is measured afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from hummingbird_t2v.diffusion.schedule import (
    latent_scale,
    scaled_linear_alphas_cumprod,
)
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_blocks import Upsample
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pruning.layouts import (
    PruneLayout,
    block_index,
    decoder_input_parts,
    encoder_input_channels,
)
from hummingbird_t2v.pruning.report import Cost, CostBreakdown
from hummingbird_t2v.pruning.transfer import prune_unet

Part = Literal["encoder", "decoder", "middle"]
BudgetMetric = Literal["params", "flops"]
ScoreTarget = Literal["guided", "caption"]
SCORE_TARGETS: tuple[ScoreTarget, ...] = ("guided", "caption")


# --------------------------------------------------------------------------------------- calibration


@dataclass
class CalibrationBatch:
    """Noisy latents and their conditions, as the teacher sees them during sampling."""

    noisy_latents: Tensor  # (b, c, T, h, w)
    timesteps: Tensor  # (b,) int64
    context: Tensor  # (b, L, d)
    uncond_context: Tensor  # (b, L, d)
    fps: Tensor  # (b,) int64


def spread_timesteps(count: int, num_train_timesteps: int = 1000) -> Tensor:
    """`count` timesteps at the midpoints of equal slices of [0, N): every noise level is represented."""
    return ((torch.arange(count, dtype=torch.float64) + 0.5) * num_train_timesteps / count).long().flip(0)


def make_calibration_batch(
    clean_latents: Tensor,
    context: Tensor,
    uncond_context: Tensor,
    *,
    fps: int | Tensor = 8,
    seed: int = 0,
    timesteps: Tensor | None = None,
    latent_rescale: bool = True,
) -> CalibrationBatch:
    """Noise clean (VAE-scaled) latents to spread timesteps with the VideoCrafter2 forward process
    x_t = √ᾱ_t·s(t)·z₀ + √(1−ᾱ_t)·ε (s = the dynamic latent rescale the teacher was trained with)."""
    batch = clean_latents.shape[0]
    if context.shape[0] != batch:
        raise ConfigError(f"calibration context has {context.shape[0]} rows for {batch} latents")
    if uncond_context.shape[0] == 1:
        uncond_context = uncond_context.expand(batch, -1, -1)
    if tuple(uncond_context.shape) != tuple(context.shape):
        raise ConfigError(f"calibration uncond_context {tuple(uncond_context.shape)} does not match context {tuple(context.shape)}")
    t = spread_timesteps(batch) if timesteps is None else timesteps.long()
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean_latents.shape, generator=generator, dtype=torch.float32)
    alphas = scaled_linear_alphas_cumprod(precision="float64_then_float32")[t]
    z0 = clean_latents.float().cpu()
    if latent_rescale:
        z0 = z0 * latent_scale(t).view(-1, 1, 1, 1, 1)
    shape = (-1, 1, 1, 1, 1)
    noisy = alphas.sqrt().view(shape) * z0 + (1 - alphas).sqrt().view(shape) * noise
    fps_tensor = fps.long() if isinstance(fps, Tensor) else torch.full((batch,), int(fps), dtype=torch.long)
    return CalibrationBatch(noisy, t, context.float(), uncond_context.float(), fps_tensor)


@torch.no_grad()
def measured_prediction(unet: UNet3D, batch: CalibrationBatch, guidance_scale: float, target: ScoreTarget = "guided") -> Tensor:
    """What a score compares, in float32: the guided ε(∅) + s·(ε(c) − ε(∅)) or the caption's part
    ε(c) − ε(∅) (module doc); both passes in one forward of twice the batch."""
    if target not in SCORE_TARGETS:
        raise ConfigError(f"unknown score target {target!r}; use one of {', '.join(SCORE_TARGETS)}")
    device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
    x = batch.noisy_latents.to(device, dtype).repeat(2, 1, 1, 1, 1)
    context = torch.cat([batch.context, batch.uncond_context]).to(device, dtype)
    t = batch.timesteps.to(device).repeat(2)
    fps = batch.fps.to(device).repeat(2)
    cond, uncond = unet(x, t, context, fps=fps).float().chunk(2)
    if target == "caption":
        return cond - uncond
    return uncond + guidance_scale * (cond - uncond)


def guided_prediction(unet: UNet3D, batch: CalibrationBatch, guidance_scale: float) -> Tensor:
    """ε(∅) + s·(ε(c) − ε(∅)) in float32."""
    return measured_prediction(unet, batch, guidance_scale, "guided")


def relative_change(output: Tensor, reference: Tensor) -> float:
    return float(((output - reference) ** 2).mean() / (reference**2).mean().clamp_min(1e-12))


# --------------------------------------------------------------------------------------- skipping


@dataclass(frozen=True)
class BlockInfo:
    name: str  # "input_blocks.N", "output_blocks.N" or "middle_block"
    part: Part
    level: int | None  # None for the middle block
    position: int | None  # position within the level
    skippable: bool
    reason: str = ""  # why it cannot be skipped


def describe_blocks(config: UNetConfig) -> list[BlockInfo]:
    """Every encoder and decoder unit and the middle block, with whether it can be skipped (module doc)."""
    index = block_index(config)
    widths = config.level_widths
    blocks: list[BlockInfo] = []
    for level, globals_ in enumerate(index.encoder):
        for position, g in enumerate(globals_):
            entering = encoder_input_channels(config, level, position)
            ok = entering == widths[level]
            reason = "" if ok else f"changes width {entering}→{widths[level]}"
            blocks.append(BlockInfo(f"input_blocks.{g}", "encoder", level, position, ok, reason))
    if config.use_middle_block:
        blocks.append(BlockInfo("middle_block", "middle", None, None, True))
    for level in reversed(range(len(widths))):
        units = len(index.decoder[level])
        for position, g in enumerate(index.decoder[level]):
            below, _ = decoder_input_parts(config, level, position, units)
            ok = below == widths[level]
            reason = "" if ok else f"changes width {below}→{widths[level]}"
            blocks.append(BlockInfo(f"output_blocks.{g}", "decoder", level, position, ok, reason))
    return blocks


class _SkippedEncoderUnit(nn.Module):
    def forward(self, h: Tensor, cond: object) -> Tensor:
        return h


class _SkippedDecoderUnit(nn.Module):
    """Drops the concatenated skip (the last channels) and keeps the level's upsampler, if any."""

    def __init__(self, below_channels: int, upsample: nn.Module | None) -> None:
        super().__init__()
        self.below_channels = below_channels
        self.upsample = upsample

    def forward(self, h_and_skip: Tensor, cond: object) -> Tensor:
        h = h_and_skip[:, : self.below_channels]
        return self.upsample(h) if self.upsample is not None else h


@contextmanager
def skipped(unet: UNet3D, names: Sequence[str]) -> Iterator[UNet3D]:
    """Temporarily skip the named units of `unet` (see the module doc); restores them on exit."""
    info = {block.name: block for block in describe_blocks(unet.config)}
    originals: list[tuple[str, nn.Module]] = []
    try:
        for name in names:
            block = info.get(name)
            if block is None:
                raise ConfigError(f"{name} is not a unit of this U-Net")
            if not block.skippable:
                raise ConfigError(f"{name} cannot be skipped: it {block.reason}")
            original = unet.get_submodule(name)
            originals.append((name, original))
            if block.part == "decoder":
                upsample = next((m for m in original if isinstance(m, Upsample)), None)
                replacement: nn.Module = _SkippedDecoderUnit(unet.config.level_widths[block.level], upsample)
            else:
                replacement = _SkippedEncoderUnit()
            _set_submodule(unet, name, replacement)
        yield unet
    finally:
        for name, original in reversed(originals):
            _set_submodule(unet, name, original)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if child.isdigit():
        parent[int(child)] = module  # an entry of input_blocks / output_blocks
    else:
        setattr(parent, child, module)


# --------------------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class BlockScore:
    block: BlockInfo
    cost: Cost  # what leaving the unit out saves
    score: float | None  # relative change of the guided prediction when skipped; None: cannot be skipped


@torch.no_grad()
def score_blocks(
    teacher: UNet3D, batch: CalibrationBatch, costs: CostBreakdown, *, guidance_scale: float = 12.0, target: ScoreTarget = "guided"
) -> list[BlockScore]:
    """Skip each unit alone and measure the change of `target` (module doc); most important first
    (unskippable units last)."""
    _require_unguided(teacher.config)
    teacher.eval()
    reference = measured_prediction(teacher, batch, guidance_scale, target)
    scores = []
    for block in describe_blocks(teacher.config):
        score = None
        if block.skippable:
            with skipped(teacher, [block.name]):
                score = relative_change(measured_prediction(teacher, batch, guidance_scale, target), reference)
        scores.append(BlockScore(block, costs.blocks[block.name], score))
    return sorted(scores, key=lambda s: (s.score is None, -(s.score or 0.0)))


# --------------------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Budget:
    metric: BudgetMetric
    limit: int

    def of(self, cost: Cost) -> int:
        return cost.params if self.metric == "params" else cost.flops


@dataclass(frozen=True)
class _Option:
    saved: Cost
    removed_score: float
    choice: tuple  # per level (encoder positions, decoder positions), then middle kept


@dataclass(frozen=True)
class Proposal:
    layout: PruneLayout
    cost: Cost  # predicted parameters and FLOPs of the student
    removed_score: float  # sum of the scores of the units left out
    removed: list[str]


def _level_options(teacher: UNetConfig, level: int, by_name: dict[str, BlockScore]) -> list[_Option]:
    n_t = teacher.blocks_per_level[level]
    index = block_index(teacher)
    options = []
    for n in range(1, n_t + 1):
        for enc in itertools.combinations(range(n_t), n):
            if any(encoder_input_channels(teacher, level, s) != encoder_input_channels(teacher, level, p) for s, p in enumerate(enc)):
                continue
            for dec in itertools.combinations(range(n_t + 1), n + 1):
                if any(
                    sum(decoder_input_parts(teacher, level, s, n + 1)) != sum(decoder_input_parts(teacher, level, p, n_t + 1))
                    for s, p in enumerate(dec)
                ):
                    continue
                removed = [f"input_blocks.{index.encoder[level][p]}" for p in range(n_t) if p not in enc]
                removed += [f"output_blocks.{index.decoder[level][p]}" for p in range(n_t + 1) if p not in dec]
                if any(by_name[name].score is None for name in removed):
                    continue
                saved = sum((by_name[name].cost for name in removed), Cost(0, 0))
                options.append(_Option(saved, sum(by_name[name].score for name in removed), ((enc, dec),)))
    return options


def _pareto(options: list[_Option], budget: Budget) -> list[_Option]:
    """Keep the options that no other option beats on both saved cost and removed score."""
    ordered = sorted(options, key=lambda o: (o.removed_score, -budget.of(o.saved)))
    front, best_saved = [], -1
    for option in ordered:
        if budget.of(option.saved) > best_saved:
            front.append(option)
            best_saved = budget.of(option.saved)
    return front


def propose_layout(
    teacher: UNetConfig,
    scores: list[BlockScore],
    teacher_cost: Cost,
    budget: Budget,
    *,
    time_cond_proj_dim: int | None = None,
    allow_dropping_middle: bool = True,
    name: str = "importance",
) -> Proposal:
    """The layout whose left-out units have the smallest total score while the student fits `budget`.

    Every level keeps at least one encoder unit and obeys the shape rule; kept units stay in teacher
    order. The search is exact over per-level options (Pareto fronts merged level by level).
    """
    by_name = {s.block.name: s for s in scores}
    projection = _projection_cost(teacher, time_cond_proj_dim)
    front = [_Option(Cost(0, 0), 0.0, ())]
    for level in range(len(teacher.channel_mult)):
        level_options = _level_options(teacher, level, by_name)
        front = _pareto(
            [_Option(a.saved + b.saved, a.removed_score + b.removed_score, a.choice + b.choice) for a in front for b in level_options],
            budget,
        )
    middle_options = [_Option(Cost(0, 0), 0.0, (True,))] if teacher.use_middle_block else [_Option(Cost(0, 0), 0.0, (False,))]
    if teacher.use_middle_block and allow_dropping_middle and by_name["middle_block"].score is not None:
        middle = by_name["middle_block"]
        middle_options.append(_Option(middle.cost, middle.score, (False,)))
    combined = [_Option(a.saved + b.saved, a.removed_score + b.removed_score, a.choice + b.choice) for a in front for b in middle_options]

    def student_cost(option: _Option) -> Cost:
        return teacher_cost - option.saved + projection

    feasible = [o for o in combined if budget.of(student_cost(o)) <= budget.limit]
    if not feasible:
        smallest = min(budget.of(student_cost(o)) for o in combined)
        raise ConfigError(
            f"no layout fits a {budget.metric} budget of {budget.limit:,}: the smallest this teacher allows "
            f"(one block per level{', no middle block' if allow_dropping_middle else ''}) has {smallest:,} {budget.metric}"
        )
    best = min(feasible, key=lambda o: (o.removed_score, -budget.of(o.saved)))
    levels, middle_kept = best.choice[:-1], best.choice[-1]
    layout = PruneLayout(
        encoder=tuple(enc for enc, _ in levels),
        decoder=tuple(dec for _, dec in levels),
        middle_block=middle_kept,
        time_cond_proj_dim=time_cond_proj_dim,
        name=name,
    )
    kept = _kept_names(teacher, layout)
    removed = [s.block.name for s in scores if s.block.name not in kept]
    return Proposal(layout, student_cost(best), best.removed_score, removed)


def _kept_names(teacher: UNetConfig, layout: PruneLayout) -> set[str]:
    index = block_index(teacher)
    kept = {"middle_block"} if layout.middle_block else set()
    for level, (enc, dec) in enumerate(zip(layout.encoder, layout.decoder)):
        kept |= {f"input_blocks.{index.encoder[level][p]}" for p in enc}
        kept |= {f"output_blocks.{index.decoder[level][p]}" for p in dec}
    return kept


def _projection_cost(teacher: UNetConfig, time_cond_proj_dim: int | None) -> Cost:
    """Change in cost from the student's guidance projection (a bias-free Linear dim → model_channels)."""

    def cost(dim: int | None) -> Cost:
        # One (1, dim) x (dim, model_channels) matmul per forward at batch 1: 2·dim·model_channels FLOPs.
        return Cost(dim * teacher.model_channels, 2 * dim * teacher.model_channels) if dim else Cost(0, 0)

    return cost(time_cond_proj_dim) - cost(teacher.time_cond_proj_dim)


@torch.no_grad()
def measure_layout(
    teacher: UNet3D, layout: PruneLayout, batch: CalibrationBatch, *, guidance_scale: float = 12.0, target: ScoreTarget = "guided"
) -> float:
    """Relative change of `target` (module doc) in the student that `layout` builds from `teacher`
    (weights copied, no training; a fresh guidance projection is left out, it is untrained anyway)."""
    _require_unguided(teacher.config)
    teacher.eval()
    reference = measured_prediction(teacher, batch, guidance_scale, target)
    student = prune_unet(teacher.state_dict(), teacher.config, layout.replace(time_cond_proj_dim=None), share_storage=True)
    return relative_change(measured_prediction(student.unet, batch, guidance_scale, target), reference)


def _require_unguided(config: UNetConfig) -> None:
    if config.time_cond_proj_dim is not None:
        raise ConfigError(
            "importance analysis measures the classifier-free-guided output of a teacher without a guidance "
            "projection; this U-Net has time_cond_proj_dim set (a guidance-distilled student), analyse its teacher instead"
        )
