"""The seam between the one training loop and what is being learned.

The loop (device placement, precision, accumulation, EMA, checkpoints, resume, logging) turns raw
video batches into a `TrainBatch` with the frozen VAE and text encoder, then calls an `Objective`.
An objective is an nn.Module holding the trainable network (and any frozen teacher), so that
accelerate/DDP wrap exactly one module; it returns the loss and a few numbers to log.

Optional hooks, all with do-nothing defaults:
- `after_optimizer_step()`: called after every optimizer step (e.g. to move an EMA target network);
- `extra_state_dict()` / `load_extra_state_dict(state)`: tensors the objective owns besides the
  trainable network that a checkpoint must hold to resume exactly (e.g. that EMA target);
- `exportable_unet(trained)` and `pipeline_config(defaults)`: how to turn what was trained into a
  model folder (used for the periodic sample videos and the export at the end), e.g. merge LoRA
  weights and pick the consistency sampler.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from hummingbird_t2v.errors import CheckpointError
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults


@dataclass
class TrainBatch:
    latents: torch.Tensor  # (b, c, T, h, w), already multiplied by the VAE scaling factor
    context: torch.Tensor  # (b, L, d) text embedding of the captions
    uncond_context: torch.Tensor  # (b, L, d) embedding of the empty prompt (CFG / prompt dropout)
    fps: torch.Tensor  # (b,) int64 fps condition
    captions: list[str] = field(default_factory=list)
    # (b,) bool, set by swap_captions: True for the clips that carry another clip's caption.
    swapped: torch.Tensor | None = None


def swap_captions(batch: TrainBatch, probability: float, generator: torch.Generator | None = None) -> TrainBatch:
    """The batch with each clip, with `probability`, under the caption (embedding and text) of another clip
    of the batch, drawn uniformly among the others; the clips themselves stay. Distillation objectives use
    it so that the student also learns the teacher's guided prediction on states that do not yet show what
    the caption asks for (docs/pruning.md). Draws nothing when `probability` is 0 (or the batch has one
    clip), so runs without it see exactly the random stream they always did."""
    count = batch.context.shape[0]
    if probability == 0.0 or count < 2:
        return batch
    device = batch.context.device
    swap = torch.rand(count, generator=generator, device=device) < probability
    offsets = torch.randint(1, count, (count,), generator=generator, device=device)
    own = torch.arange(count, device=device)
    source = torch.where(swap, (own + offsets) % count, own)
    captions = [batch.captions[i] for i in source.tolist()] if batch.captions else batch.captions
    return dataclasses.replace(batch, context=batch.context[source], captions=captions, swapped=source != own)


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. the trainable parameters
    # Extra scalars to log (the loop logs `loss` itself). Detached 0-d tensors are fine and avoid a
    # device sync per step; the loop averages them over the steps between two log lines.
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class: subclasses set `self.model` (the trainable network) and implement `forward`.

    `forward` draws all its randomness (timesteps, noise, prompt dropout) from `generator` when
    one is given: the loop passes a per-rank generator whose state it checkpoints, which is what
    makes an interrupted and resumed run match an uninterrupted one.
    """

    model: nn.Module

    def forward(self, batch: TrainBatch, generator: torch.Generator | None = None) -> ObjectiveOutput:
        raise NotImplementedError

    def trainable_module(self) -> nn.Module:
        """What the optimizer updates, EMA tracks and checkpoints save (never a frozen teacher)."""
        return self.model

    def after_optimizer_step(self) -> None:
        """Called by the loop after every optimizer step, on every rank."""

    def extra_state_dict(self) -> dict[str, torch.Tensor]:
        """Objective-owned tensors (not the trainable network, never a frozen teacher) to checkpoint."""
        return {}

    def load_extra_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `extra_state_dict` returned; `state` is empty when the checkpoint has none."""
        if state:
            raise CheckpointError(
                f"the checkpoint holds objective state ({sorted(state)[:3]}, ...) that {type(self).__name__} "
                "does not use; resume it with the objective settings it was written with"
            )

    def exportable_unet(self, trained: nn.Module) -> nn.Module:
        """The UNet3D a pipeline samples with, given `trained` (the EMA copy or the live
        `trainable_module()`). Override when they differ, e.g. to merge LoRA weights into a copy;
        never modify `trained` in place."""
        return trained

    def pipeline_config(self, defaults: SamplingDefaults) -> PipelineConfig:
        """How the exported model samples: DDIM with classifier-free guidance for a U-Net without a
        guidance projection (a base/teacher model), multistep consistency for one with it."""
        config = getattr(self.trainable_module(), "config", None)
        sampler = "consistency" if getattr(config, "time_cond_proj_dim", None) else "ddim"
        return PipelineConfig(sampler=sampler, defaults=defaults)
