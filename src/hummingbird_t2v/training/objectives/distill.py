"""Stage 1: distil the classifier-free-guided teacher into the pruned student (training-and-data.md §1).

For each clip (§1.2):

1. t ~ U{0..N-1};
2. VideoCrafter2's dynamic latent rescale z0 <- s(t)·z0 (s ramps 1.0 -> 0.7 over t < 400; the official
   stage 1 sets `use_dynamic_rescale` with `base_scale` 0.7, `turning_step` 400);
3. z_t = sqrt(ᾱ_t)·z0 + sqrt(1-ᾱ_t)·ε with the ᾱ table of VC2's LatentDiffusion (float64, stored float32);
4. target = ε_T(z_t, t, ∅, fps) + s·(ε_T(z_t, t, c, fps) − ε_T(z_t, t, ∅, fps)), s = 12; both teacher
   passes get the same fps as the student, as the official stage 1 does;
5. loss = mean((ε_S(z_t, t, c, fps) − target)²).

The student learns guidance itself, so it samples with DDIM *without* CFG (`pipeline_config`).

**The teacher** is frozen and runs under no_grad, optionally in a lower precision (`teacher_dtype`),
and by default in eval mode, so the target is deterministic. The official run leaves the teacher in
train mode by accident (Lightning's `model.train()` reaches it), so its ResBlock and temporal-conv
dropout make the target noisy; `teacher_dropout: true` reproduces that (§1.2, §8 item 16).
The teacher is deliberately *not* a registered sub-module: it never appears in `state_dict()`,
`parameters()` or a DDP wrapper, so no checkpoint can hold teacher tensors; `.to()` still moves it.

**Optional terms, off by default** (the official stage 1 has neither):

* `feature_loss_weight`: MSE between student and teacher features at the output of every resolution
  level (encoder and decoder) and of the middle block, where both have one. Level outputs have the same
  shape in any pruned layout, so no block map is needed. Teacher features come from its conditional pass.
* `data_loss_weight`: the plain diffusion loss mean((ε_S − ε)²) against the true noise.
* `caption_swap_probability`: the share of clips distilled under another clip's caption (teacher and
  student both see the swapped caption, so the target is still exactly what the teacher predicts). Why:
  noised real clips always agree with their captions, so the student only ever learns the guided
  prediction on states that already show what the caption asks for, while classifier-free guidance does
  its work on sampling states that do not yet (or show something else). A swapped caption is such a
  state. The target needs no clean data that matches the caption, which makes this free in stage 1.
* `rewards`: reward terms (the entries stage 2 takes, training.objectives.reward_terms) on the student's
  one-step clean prediction x̂₀ = (z_t − √(1−ᾱ_t)·ε_S)/√ᾱ_t of the same pass (divided by s(t) under the
  latent rescale, so the frozen VAE decodes what a sampler's x̂₀ would be), for the clips whose t lies in
  `reward_timestep_range` (all by default) and, with `reward_swapped_clips=False`, that kept their own
  caption (a swapped clip's x̂₀ at low t shows its own clip, so a reward for the borrowed caption pulls
  against the target). Each adds −weight·mean(score); the gradient reaches the student
  through the decoder. Why: the target only says "what the teacher predicts", and a property the student
  gets wrong less often than the loss can see (on the toy world, neighbouring hues) can be asked for
  directly, as stage 2's visual feedback does. On the toy world's colour it did not help (docs/pruning.md).

Registered as objective `distill` (`hummingbird train distill`, settings `DistillSettings`): the teacher is
the config's `model.unet`, the student `objective.student` (a path) or pruned from the teacher with
`objective.layout` (training.objectives.students).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hummingbird_t2v.diffusion.schedule import (
    DEFAULT_BETA_END,
    DEFAULT_BETA_START,
    DEFAULT_NUM_TRAIN_TIMESTEPS,
    VC2_SCALE_B,
    VC2_SCALE_MID_STEP,
    scaled_linear_alphas_cumprod,
    vc2_latent_scale_table,
)
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
from hummingbird_t2v.training.objective import (
    Objective,
    ObjectiveOutput,
    TrainBatch,
    swap_captions,
)
from hummingbird_t2v.training.objectives import ObjectiveSpec, register_objective
from hummingbird_t2v.training.objectives.reward_terms import (
    RewardFeedback,
    RewardSpec,
    RewardTerm,
    build_reward_terms,
)
from hummingbird_t2v.training.objectives.students import (
    check_student_source,
    student_unet,
)

__all__ = [
    "DistillSettings",
    "Stage1DistillObjective",
    "Stage1Settings",
    "Stage1Terms",
    "build_distill_objective",
    "level_output_modules",
]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Stage1Settings:
    guidance_scale: float = 12.0  # `distil_guidance_scale`
    num_train_timesteps: int = DEFAULT_NUM_TRAIN_TIMESTEPS
    beta_start: float = DEFAULT_BETA_START
    beta_end: float = DEFAULT_BETA_END
    # VC2's dynamic latent rescale (`use_dynamic_rescale`, `base_scale`, `turning_step`).
    latent_rescale: bool = True
    rescale_base: float = VC2_SCALE_B
    rescale_turning_step: int = VC2_SCALE_MID_STEP
    # Precision of the frozen teacher: None keeps its dtype, else "fp32", "fp16" or "bf16".
    teacher_dtype: str | None = None
    # Run the teacher in train mode (dropout on), as the official run does by accident.
    teacher_dropout: bool = False
    feature_loss_weight: float = 0.0
    data_loss_weight: float = 0.0
    # The share of clips distilled under another clip's caption (module doc).
    caption_swap_probability: float = 0.0
    # Reward terms on the student's x̂₀ (the entries of stage 2's `objective.rewards`), and the timesteps
    # [low, high] whose clips they score (None: every clip of the batch).
    rewards: tuple[RewardSpec, ...] = ()
    reward_timestep_range: tuple[int, int] | None = None
    # False: the reward terms skip the clips under another clip's caption (module doc).
    reward_swapped_clips: bool = True

    def __post_init__(self) -> None:
        if self.guidance_scale < 0:
            raise ConfigError(f"objective.guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0.0 < self.rescale_base <= 1.0:
            raise ConfigError(f"objective.rescale_base must lie in (0, 1], got {self.rescale_base}")
        if not 0 < self.rescale_turning_step <= self.num_train_timesteps:
            raise ConfigError(
                f"objective.rescale_turning_step must lie in 1..{self.num_train_timesteps}, got {self.rescale_turning_step}"
            )
        if self.teacher_dtype is not None and self.teacher_dtype not in _DTYPES:
            raise ConfigError(f"objective.teacher_dtype must be one of {sorted(_DTYPES)} or null, got {self.teacher_dtype!r}")
        for name in ("feature_loss_weight", "data_loss_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"objective.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.caption_swap_probability <= 1.0:
            raise ConfigError(f"objective.caption_swap_probability must lie in [0, 1], got {self.caption_swap_probability}")
        if self.reward_timestep_range is not None:
            if len(self.reward_timestep_range) != 2:
                raise ConfigError(f"objective.reward_timestep_range is [low, high] or null, got {self.reward_timestep_range}")
            low, high = self.reward_timestep_range
            if not 0 <= low <= high < self.num_train_timesteps:
                raise ConfigError(
                    f"objective.reward_timestep_range must satisfy 0 <= low <= high < {self.num_train_timesteps}, "
                    f"got {list(self.reward_timestep_range)}"
                )


@dataclass
class Stage1Terms:
    """Everything one loss evaluation computed (the golden test and diagnostics read these)."""

    scale: Tensor | None  # s(t), (b,), None without the rescale
    z_t: Tensor
    teacher_eps_cond: Tensor
    teacher_eps_uncond: Tensor
    target: Tensor
    student_eps: Tensor
    distill_loss: Tensor
    feature_loss: Tensor | None
    data_loss: Tensor | None
    loss: Tensor
    reward_loss: Tensor | None = None  # None without reward terms or without a clip in their range
    reward_logs: dict[str, Tensor] = field(default_factory=dict)  # each term's mean score


def level_output_modules(config: UNetConfig) -> list[str]:
    """Names of the units whose outputs are the resolution levels' outputs: the last encoder unit of each
    level, the middle block (if any) and the last decoder unit of each level (after its upsampler).

    Their shapes depend only on the level widths, so they correspond between a teacher and any student
    pruned from it.
    """
    counts = config.blocks_per_level
    names, position = [], 0
    for level, n in enumerate(counts):
        position += n
        names.append(f"input_blocks.{position}")
        position += 1  # the downsampler (or nothing after the last level)
    if config.use_middle_block:
        names.append("middle_block")
    position = -1
    for level in reversed(range(len(counts))):
        position += counts[level] + 1
        names.append(f"output_blocks.{position}")
    return names


class Stage1DistillObjective(Objective):
    """Guidance distillation of a frozen teacher U-Net into a (pruned) student U-Net.

    ``rewards`` are built reward terms (``settings.rewards`` holds only their config entries); they need
    the frozen ``vae``, which decodes the student's x̂₀ for them.
    """

    def __init__(
        self,
        student: UNet3D,
        teacher: UNet3D,
        settings: Stage1Settings | None = None,
        rewards: Sequence[RewardTerm] = (),
        vae: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.settings = s = settings or Stage1Settings()
        _check_pair(student.config, teacher.config)
        self.model = student
        self.reward_feedback = RewardFeedback(rewards, vae) if rewards else None
        teacher.requires_grad_(False)
        if s.teacher_dtype is not None:
            teacher.to(_DTYPES[s.teacher_dtype])
        # Not registered as a sub-module on purpose (module doc): bypass nn.Module.__setattr__.
        object.__setattr__(self, "_teacher", teacher)
        self._teacher.train(False)

        alphas = scaled_linear_alphas_cumprod(s.num_train_timesteps, s.beta_start, s.beta_end, precision="float64_then_float32")
        # Non-persistent: derived from the settings, so checkpoints hold only the student.
        self.register_buffer("sqrt_alphas_cumprod", alphas.double().sqrt().float(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - alphas.double()).sqrt().float(), persistent=False)
        scale = (
            vc2_latent_scale_table(s.num_train_timesteps, scale_b=s.rescale_base, mid_step=s.rescale_turning_step)
            if s.latent_rescale
            else None
        )
        self.register_buffer("latent_scale", scale, persistent=False)

        student_levels = level_output_modules(student.config)
        teacher_levels = level_output_modules(teacher.config)
        # Pair level outputs by role: the middle block only when both networks have one.
        self.feature_pairs = [
            (a, b) for a, b in zip(_without_middle(student_levels), _without_middle(teacher_levels))
        ] + ([("middle_block", "middle_block")] if "middle_block" in student_levels and "middle_block" in teacher_levels else [])

    @property
    def teacher(self) -> UNet3D:
        return self._teacher

    def train(self, mode: bool = True) -> Stage1DistillObjective:
        super().train(mode)
        self._teacher.train(mode and self.settings.teacher_dropout)
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> Stage1DistillObjective:
        # Keep the unregistered teacher on the same device as the student (.to(), .cuda(), ...), in its own dtype.
        super()._apply(fn, recurse)
        self._teacher._apply(fn, recurse)
        if self.settings.teacher_dtype is not None:
            self._teacher.to(_DTYPES[self.settings.teacher_dtype])
        return self

    # ------------------------------------------------------------------------------ the loss

    def forward(self, batch: TrainBatch, generator: torch.Generator | None = None) -> ObjectiveOutput:
        z0 = batch.latents
        device = z0.device
        t = torch.randint(0, self.settings.num_train_timesteps, (z0.shape[0],), generator=generator, device=device)
        noise = torch.randn(z0.shape, generator=generator, device=device)
        batch = swap_captions(batch, self.settings.caption_swap_probability, generator)
        terms = self.compute(batch, t, noise, generator)
        logs: dict[str, float | Tensor] = {"loss_distill": terms.distill_loss.detach()}
        if terms.feature_loss is not None:
            logs["loss_feature"] = terms.feature_loss.detach()
        if terms.data_loss is not None:
            logs["loss_data"] = terms.data_loss.detach()
        logs.update(terms.reward_logs)
        return ObjectiveOutput(loss=terms.loss, logs=logs)

    def compute(self, batch: TrainBatch, t: Tensor, noise: Tensor, generator: torch.Generator | None = None) -> Stage1Terms:
        """The loss for given timesteps `t` (b,) and noise (shaped like the latents); `generator` draws
        the frames the reward terms score."""
        s = self.settings
        z0 = batch.latents.float()
        per_sample = (-1,) + (1,) * (z0.ndim - 1)
        scale = None
        if self.latent_scale is not None:
            scale = self.latent_scale[t]
            z0 = z0 * scale.view(per_sample)
        z_t = self.sqrt_alphas_cumprod[t].view(per_sample) * z0 + self.sqrt_one_minus_alphas_cumprod[t].view(per_sample) * noise.float()

        want_features = s.feature_loss_weight > 0
        with torch.no_grad(), self._capture(self._teacher, [b for _, b in self.feature_pairs], want_features) as teacher_features:
            # One pass over the conditional and unconditional halves; every sample's result is independent.
            both = self._teacher(
                z_t.repeat(2, *(1,) * (z_t.ndim - 1)),
                t.repeat(2),
                torch.cat([batch.context, batch.uncond_context]),
                fps=_repeat_fps(batch.fps, 2),
            ).float()
        eps_cond, eps_uncond = both.chunk(2)
        target = eps_uncond + s.guidance_scale * (eps_cond - eps_uncond)

        with self._capture(self.model, [a for a, _ in self.feature_pairs], want_features) as student_features:
            student_eps = self.model(z_t, t, batch.context, fps=batch.fps).float()
        distill_loss = F.mse_loss(student_eps, target)
        loss = distill_loss

        feature_loss = None
        if want_features:
            rows = z_t.shape[0] * z_t.shape[2]  # the conditional half of the teacher's (2b·T, C, H, W) features
            feature_loss = torch.stack(
                [
                    F.mse_loss(student_features[a].float(), teacher_features[b][:rows].float())
                    for a, b in self.feature_pairs
                ]
            ).mean()
            loss = loss + s.feature_loss_weight * feature_loss
        data_loss = None
        if s.data_loss_weight > 0:
            data_loss = F.mse_loss(student_eps, noise.float())
            loss = loss + s.data_loss_weight * data_loss
        reward_loss, reward_logs = None, {}
        if self.reward_feedback is not None:
            skip = batch.swapped if not s.reward_swapped_clips else None
            reward_loss, reward_logs = self._reward_loss(
                self.reward_feedback, z_t, t, student_eps, scale, batch.captions, skip, generator
            )
            if reward_loss is not None:
                loss = loss + reward_loss
        return Stage1Terms(
            scale, z_t, eps_cond, eps_uncond, target, student_eps, distill_loss, feature_loss, data_loss, loss,
            reward_loss, reward_logs,
        )

    def _reward_loss(
        self,
        feedback: RewardFeedback,
        z_t: Tensor,
        t: Tensor,
        student_eps: Tensor,
        scale: Tensor | None,
        captions: Sequence[str],
        skip: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """The reward terms on the student's x̂₀ of the clips whose t is in range and that `skip` (b,) bool
        does not mark (None if there is none)."""
        if len(captions) != z_t.shape[0]:
            raise ConfigError(
                f"stage-1 reward terms need the batch's captions, got {len(captions)} for {z_t.shape[0]} clips"
            )
        low, high = self.settings.reward_timestep_range or (0, self.settings.num_train_timesteps - 1)
        keep = (t >= low) & (t <= high)
        if skip is not None:
            keep &= ~skip.to(keep.device)
        chosen = keep.nonzero().flatten()
        if chosen.numel() == 0:
            return None, {}
        t_chosen = t[chosen]
        per_sample = (-1,) + (1,) * (z_t.ndim - 1)
        x0 = (
            z_t[chosen] - self.sqrt_one_minus_alphas_cumprod[t_chosen].view(per_sample) * student_eps[chosen]
        ) / self.sqrt_alphas_cumprod[t_chosen].view(per_sample)
        if scale is not None:  # the rescaled clip s(t)·z0 back to the latents the VAE decodes
            x0 = x0 / scale[chosen].view(per_sample)
        return feedback(x0, [captions[i] for i in chosen.tolist()], generator)

    @contextmanager
    def _capture(self, unet: nn.Module, names: list[str], enabled: bool) -> Iterator[dict[str, Tensor]]:
        features: dict[str, Tensor] = {}
        hooks = []
        if enabled:
            for name in names:
                hook = lambda _m, _i, output, name=name: features.__setitem__(name, output)
                hooks.append(unet.get_submodule(name).register_forward_hook(hook))
        try:
            yield features
        finally:
            for hook in hooks:
                hook.remove()

    # ------------------------------------------------------------------------------ export

    def pipeline_config(self, defaults: SamplingDefaults) -> PipelineConfig:
        """DDIM without classifier-free guidance: the student has learnt the guided prediction."""
        s = self.settings
        return PipelineConfig(
            sampler="ddim",
            defaults=dataclasses.replace(defaults, guidance_scale=1.0),
            num_train_timesteps=s.num_train_timesteps,
            beta_start=s.beta_start,
            beta_end=s.beta_end,
            use_scale=s.latent_rescale,
            scale_b=s.rescale_base,
        )


def _without_middle(names: list[str]) -> list[str]:
    return [name for name in names if name != "middle_block"]


def _repeat_fps(fps: Tensor, times: int) -> Tensor:
    return fps.repeat(times) if fps.ndim == 1 and fps.numel() > 1 else fps


def _check_pair(student: UNetConfig, teacher: UNetConfig) -> None:
    for name, role in ((student, "student"), (teacher, "teacher")):
        if name.time_cond_proj_dim is not None:
            raise ConfigError(
                f"stage 1 distils classifier-free guidance into a U-Net without a guidance projection, but the {role} "
                f"has time_cond_proj_dim={name.time_cond_proj_dim}; prune the student with --no-guidance-projection "
                "(stage 2 adds the projection)"
            )
    same = ("in_channels", "out_channels", "model_channels", "channel_mult", "context_dim", "fps_cond")
    differing = [f"{field}: student {getattr(student, field)} vs teacher {getattr(teacher, field)}" for field in same if getattr(student, field) != getattr(teacher, field)]
    if differing:
        raise ConfigError(f"the student was not pruned from this teacher ({'; '.join(differing)})")


# ------------------------------------------------------------------------------ `hummingbird train distill`


@dataclass(frozen=True)
class DistillSettings(Stage1Settings):
    """The `objective:` section of `hummingbird train distill`: the loss settings of `Stage1Settings` plus
    where the student comes from. The teacher is `model.unet` (frozen; its VAE and text encoder are the
    `model.vae` / `model.text_encoder` the batches are encoded with and the export ships)."""

    # A model folder, U-Net folder or checkpoint file of the student (no guidance projection), e.g. the
    # output of `hummingbird prune --no-guidance-projection`; or null and ...
    student: str | None = None
    # ... hb-0.9b, hb-0.7b or a LAYOUT.yaml: the student is pruned from the teacher when the run starts.
    layout: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_student_source(self.student, self.layout)

    def loss_settings(self) -> Stage1Settings:
        return Stage1Settings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Stage1Settings)})


def build_distill_objective(settings: DistillSettings, components) -> Stage1DistillObjective:
    teacher = components.unet
    if not isinstance(teacher, UNet3D):
        raise ConfigError(f"stage 1 distils a UNet3D teacher (model.unet), got {type(teacher).__name__}")
    student = student_unet(settings.student, settings.layout, teacher)
    student.requires_grad_(True)  # the whole student is trained (§1.3)
    rewards = build_reward_terms(settings.rewards)
    return Stage1DistillObjective(
        student, teacher, settings.loss_settings(), rewards=rewards, vae=components.vae if rewards else None
    )


register_objective(
    ObjectiveSpec(
        name="distill",
        command="distill",
        settings_class=DistillSettings,
        build=build_distill_objective,
        description="stage 1: distil the CFG-guided teacher (model.unet) into a pruned student (objective.student "
        "or objective.layout), optionally with reward terms on its x̂₀ (objective.rewards)",
    )
)
