"""Stage 2: latent consistency distillation of a DDIM teacher into the pruned student, with reward terms.

One loss evaluation (training spec §2.2; every step checked against the official loop body by
reference/golden/stage2_step_tiny.safetensors), per sample:

1. draw a solver index n ~ U{0..49}, noise ε and a guidance scale w ~ U[w_min, w_max];
   t_s = τ_n on the 50-point grid 19 … 999, t_e = max(t_s − 20, 0);
2. z_ts = √ᾱ_ts·z0 + √(1−ᾱ_ts)·ε;
3. student: ε_θ = U_θ(z_ts, t_s, text, fps, ω(w)) with ω the 256-d guidance embedding, and the
   one-step consistency output f_θ = c_skip(t_s)·z_ts + c_out(t_s)·x̂₀(ε_θ);
4. teacher (no grad, eval mode): ε_c, ε_u at (z_ts, t_s); LCM-form CFG on x̂₀ and on ε; one DDIM
   step to z_te (diffusion.ddim_solver);
5. target (no grad): the same student (``target="online"``, as released) or an EMA of its trainable
   weights (``target="ema"``) at (z_te, t_e): c_skip(t_e)·z_te + c_out(t_e)·x̂₀(ε⁻);
6. pseudo-Huber loss mean(√((f_θ − target)² + c²) − c), c = 0.001;
7. reward terms (§2.3): f_θ of a few frames is decoded by the frozen VAE *with* gradients, mapped
   to [0, 1] and scored; each term adds −weight·mean(score). Every sample as released, or only those
   whose t_s lies in ``reward_timestep_range`` (and, with ``reward_swapped_clips=False``, that kept
   their own caption).

Choices that differ from the released code, each a switch:
* ``uncond_fps_quirk`` (default False): the official unconditional teacher pass gets no fps and so
  runs at the U-Net default of 16 while the conditional pass runs at 8. True reproduces that
  (and the golden); False gives both passes the same fps.
* The teacher always runs in eval mode. The official teacher stays in train mode, so its
  TemporalConvBlock dropout (0.1) makes the solver step stochastic. The student and the online
  target follow the loop's train/eval mode, as released.
* ``target="ema"``: the released T2V stage 2 has no target network (its ema_decay is unused);
  the EMA target follows the LCM paper. It is moved by ``after_optimizer_step()`` and checkpointed
  through ``extra_state_dict()`` (both called by the training loop).

Registered as objective ``consistency`` (``hummingbird train consistency``, settings
``ConsistencySettings``): the teacher is the config's ``model.unet``, the student ``objective.student``
(or pruned with ``objective.layout``), given a guidance projection when it has none and LoRA or full
fine-tuning (``objective.trainable``); ``objective.rewards`` builds the reward terms.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hummingbird_t2v.diffusion.consistency import (
    consistency_boundary_scalings,
    predicted_original_sample,
)
from hummingbird_t2v.diffusion.ddim_solver import (
    ddim_solver_timesteps,
    ddim_step,
    lcm_guidance,
    solver_alphas_cumprod_prev,
    solver_interval,
    solver_spacing,
)
from hummingbird_t2v.diffusion.guidance import (
    GUIDANCE_EMBEDDING_DIM,
    guidance_scale_embedding,
)
from hummingbird_t2v.diffusion.schedule import (
    check_alphas_cumprod,
    scaled_linear_alphas_cumprod,
)
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.unet import UNet3D, extend_unet
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
from hummingbird_t2v.training.lora import (
    DEFAULT_CONV3D_DROPOUT,
    DEFAULT_DROPOUT,
    DEFAULT_RANK,
    add_lora,
    has_lora,
    merge_lora,
)
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
    select_reward_frames,
)
from hummingbird_t2v.training.objectives.students import (
    check_student_source,
    seeded,
    student_config,
    student_unet,
)

__all__ = [
    "ConsistencyDistillationConfig",
    "ConsistencyDistillationObjective",
    "ConsistencyDraws",
    "ConsistencySettings",
    "ConsistencyTerms",
    "LoraSettings",
    "RewardSpec",
    "RewardTerm",
    "add_guidance_projection",
    "build_consistency_objective",
    "build_reward_terms",
    "consistency_student_config",
    "select_reward_frames",
]

_EMA_PREFIX = "target_ema."  # keys of the EMA target weights in extra_state_dict()
_TEACHER_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ConsistencyDistillationConfig:
    num_ddim_timesteps: int = 50
    # Solver step in timesteps (the official `topk`); must equal the grid spacing 1000 // 50.
    skip: int = 20
    w_min: float = 5.0
    w_max: float = 15.0
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    huber_c: float = 0.001
    # fps condition of every pass (the official --fps 8); None: each sample's batch fps.
    fps: int | None = 8
    # True: the teacher's unconditional pass runs at the U-Net default fps (16), as released.
    uncond_fps_quirk: bool = False
    target: Literal["online", "ema"] = "online"
    target_ema_decay: float = 0.95  # only for target="ema"
    teacher_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    # The share of clips distilled (and rewarded) under another clip's caption, as in stage 1
    # (training.objective.swap_captions); 0 as released.
    caption_swap_probability: float = 0.0
    # Reward only the clips whose solver start timestep (where f_θ is taken) lies in [low, high]; None
    # rewards every clip, as released. Why: at large t the one-step prediction is a blur in which a
    # reward model may not read what it scores (stage 1's objective.reward_timestep_range likewise).
    reward_timestep_range: tuple[int, int] | None = None
    # False: the reward terms skip the clips distilled under another clip's caption. Why: at low t
    # their one-step prediction shows their own clip, so a reward for the borrowed caption pulls
    # against the consistency target (docs/toy-recipe-results.md, run 15).
    reward_swapped_clips: bool = True
    # The official solver's ᾱ_prev table is float64, so z_te and the target are float64 until the
    # loss. False keeps them float32 (for devices without float64, e.g. Apple MPS).
    float64_solver: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.w_min <= self.w_max:
            raise ConfigError(f"need 0 <= w_min <= w_max, got w_min={self.w_min}, w_max={self.w_max}")
        for name in ("sigma_data", "timestep_scaling", "huber_c"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.fps is not None and self.fps < 1:
            raise ConfigError(f"fps must be a positive integer or None (use the batch fps), got {self.fps}")
        if self.target not in ("online", "ema"):
            raise ConfigError(f"target must be 'online' or 'ema', got {self.target!r}")
        if not 0.0 <= self.target_ema_decay < 1.0:
            raise ConfigError(f"target_ema_decay must lie in [0, 1), got {self.target_ema_decay}")
        if not 0.0 <= self.caption_swap_probability <= 1.0:
            raise ConfigError(f"caption_swap_probability must lie in [0, 1], got {self.caption_swap_probability}")
        if self.reward_timestep_range is not None and (
            len(self.reward_timestep_range) != 2 or not 0 <= self.reward_timestep_range[0] <= self.reward_timestep_range[1]
        ):
            raise ConfigError(
                f"reward_timestep_range is [low, high] with 0 <= low <= high, or null; got {self.reward_timestep_range}"
            )
        if self.teacher_dtype not in _TEACHER_DTYPES:
            raise ConfigError(f"teacher_dtype must be one of {sorted(_TEACHER_DTYPES)}, got {self.teacher_dtype!r}")


@dataclass
class ConsistencyDraws:
    """The random inputs of one loss evaluation (drawn by `draw`, or injected by tests)."""

    index: Tensor  # (b,) int64 solver indices in 0..num_ddim_timesteps-1
    noise: Tensor  # like the latents
    w: Tensor  # (b,) float32 guidance scales


@dataclass
class ConsistencyTerms:
    """Everything one loss evaluation computed (names as in the golden file)."""

    start_timesteps: Tensor
    end_timesteps: Tensor
    alpha_prev: Tensor
    c_skip_start: Tensor
    c_out_start: Tensor
    c_skip_end: Tensor
    c_out_end: Tensor
    w_embedding: Tensor
    z_ts: Tensor
    student_eps: Tensor
    student_x0: Tensor
    f_theta: Tensor  # the one-step prediction (b, c, T, h, w), differentiable: what rewards score
    teacher_eps_cond: Tensor
    teacher_eps_uncond: Tensor
    teacher_x0_cond: Tensor
    teacher_x0_uncond: Tensor
    guided_x0: Tensor
    guided_eps: Tensor
    z_te: Tensor
    target_eps: Tensor
    target_x0: Tensor
    target: Tensor
    loss: Tensor  # pseudo-Huber consistency loss (scalar)


def add_guidance_projection(unet: UNet3D, dim: int = GUIDANCE_EMBEDDING_DIM) -> UNet3D:
    """A student that takes the guidance embedding: ``unet``'s weights plus a new ``time_cond_proj``.

    The projection (dim -> model_channels, no bias) gets torch's default random init, as in the
    released recipe, where it stays frozen and adapts only through its LoRA. The other weights
    are shared with ``unet``, not copied.
    """
    if unet.config.time_cond_proj_dim is not None:
        raise ConfigError(f"this U-Net already has a guidance projection (time_cond_proj_dim={unet.config.time_cond_proj_dim})")

    def place(extended: UNet3D, device: torch.device, dtype: torch.dtype) -> None:
        extended.time_cond_proj = nn.Linear(dim, unet.config.model_channels, bias=False, device=device, dtype=dtype)

    return extend_unet(unet, unet.config.replace(time_cond_proj_dim=dim), "a guidance projection", place)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def _check_pair(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student, "config", None), getattr(teacher, "config", None)
    if s is None or t is None:
        raise ConfigError("the student and the teacher must be UNet3D modules (with a .config)")
    if not s.time_cond_proj_dim:
        raise ConfigError(
            "the student has no guidance projection (time_cond_proj_dim): wrap it with add_guidance_projection(unet) "
            "or build it from a student preset such as hb-0.7b"
        )
    if t.time_cond_proj_dim:
        raise ConfigError("the teacher must be a U-Net without a guidance projection (e.g. vc2); it is run with CFG")
    for name in ("in_channels", "out_channels", "context_dim"):
        if getattr(s, name) != getattr(t, name):
            raise ConfigError(f"student and teacher differ in {name} ({getattr(s, name)} vs {getattr(t, name)})")


class _TargetEMA(nn.Module):
    """EMA of the student's trainable weights; the target runs the student with these swapped in."""

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.names = [name for name, p in student.named_parameters() if p.requires_grad]
        if not self.names:
            raise ConfigError("target='ema' needs a student with trainable parameters")
        # Buffers (not parameters): moved with the objective, never optimised. Names cannot contain dots.
        # At least float32, so that half-precision weights do not round the average away.
        for i, name in enumerate(self.names):
            weight = student.get_parameter(name).detach()
            self.register_buffer(f"w{i}", weight.to(torch.promote_types(weight.dtype, torch.float32)).clone())

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"w{i}") for i, name in enumerate(self.names)}

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        for name, shadow in self.tensors().items():
            shadow.lerp_(student.get_parameter(name).detach().to(shadow.dtype), 1.0 - self.decay)


class ConsistencyDistillationObjective(Objective):
    """Stage-2 loss: consistency distillation from a CFG-guided DDIM teacher, plus optional reward terms.

    ``student``: a UNet3D with a guidance projection, with LoRA injected (training.lora) or fully
    trainable. ``teacher``: a UNet3D without one; frozen here and kept in eval mode. ``vae``: the
    frozen VideoVAE, needed only by reward terms. ``alphas_cumprod`` defaults to the float32
    scaled-linear table of the T2V-Turbo scheduler.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        alphas_cumprod: Tensor | None = None,
        config: ConsistencyDistillationConfig | None = None,
        *,
        rewards: Sequence[RewardTerm] = (),
        vae: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = c = config or ConsistencyDistillationConfig()
        _check_pair(student, teacher)
        self.model = student
        self.teacher = teacher.requires_grad_(False).eval().to(_TEACHER_DTYPES[c.teacher_dtype])
        self.reward_feedback = RewardFeedback(rewards, vae) if rewards else None

        if alphas_cumprod is None:
            alphas_cumprod = scaled_linear_alphas_cumprod(precision="float32")
        num_train_timesteps = alphas_cumprod.numel()
        solver_timesteps = ddim_solver_timesteps(c.num_ddim_timesteps, num_train_timesteps)
        check_alphas_cumprod(alphas_cumprod, int(solver_timesteps.max()))
        spacing = solver_spacing(c.num_ddim_timesteps, num_train_timesteps)
        if c.skip != spacing:
            raise ConfigError(
                f"skip={c.skip} must equal the solver grid spacing {spacing} ({num_train_timesteps} // "
                f"{c.num_ddim_timesteps}): the DDIM step lands on the previous grid point"
            )
        if c.reward_timestep_range is not None:
            low, high = c.reward_timestep_range
            if not ((solver_timesteps >= low) & (solver_timesteps <= high)).any():
                raise ConfigError(
                    f"no point of the {c.num_ddim_timesteps}-point solver grid ({int(solver_timesteps.min())} to "
                    f"{int(solver_timesteps.max())}) lies in reward_timestep_range {list(c.reward_timestep_range)}; "
                    "widen the range"
                )
        alphas_prev = solver_alphas_cumprod_prev(alphas_cumprod, solver_timesteps)
        # Non-persistent: derived from the settings, so nothing of this goes into checkpoints.
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.register_buffer("solver_timesteps", solver_timesteps, persistent=False)
        self.register_buffer(
            "solver_alphas_prev", alphas_prev if c.float64_solver else alphas_prev.float(), persistent=False
        )
        self.target_ema = _TargetEMA(student, c.target_ema_decay) if c.target == "ema" else None

    # ----------------------------------------------------------------------------- module state

    def train(self, mode: bool = True) -> ConsistencyDistillationObjective:
        """Train mode reaches the student only: the teacher (and the reward part) stay in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def after_optimizer_step(self) -> None:
        """Called by the loop after every optimizer step: moves the EMA target (no-op for 'online')."""
        if self.target_ema is not None:
            self.target_ema.update(self.model)

    def extra_state_dict(self) -> dict[str, Tensor]:
        """What a checkpoint must hold besides the student to resume exactly: the EMA target weights."""
        if self.target_ema is None:
            return {}
        return {_EMA_PREFIX + name: t.detach().clone() for name, t in self.target_ema.tensors().items()}

    def load_extra_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the EMA target; an empty ``state`` (a checkpoint written with target='online')
        restarts the average from the current student weights."""
        if self.target_ema is None:
            super().load_extra_state_dict(state)
            return
        if not state:
            self.target_ema = _TargetEMA(self.model, self.config.target_ema_decay)
            return
        expected = {_EMA_PREFIX + name for name in self.target_ema.names}
        if set(state) != expected:
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            raise CheckpointError(
                f"the checkpoint's EMA-target weights do not fit this student: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}; resume with the student and LoRA settings it was written with"
            )
        with torch.no_grad():
            for name, shadow in self.target_ema.tensors().items():
                shadow.copy_(state[_EMA_PREFIX + name])

    def exportable_unet(self, trained: nn.Module) -> nn.Module:
        """The student with its LoRA merged (into a copy); a fully trained student as it is."""
        return merge_lora(copy.deepcopy(trained)) if has_lora(trained) else trained

    def pipeline_config(self, defaults: SamplingDefaults) -> PipelineConfig:
        return PipelineConfig(
            sampler="consistency",
            defaults=defaults,
            num_train_timesteps=self.alphas_cumprod.numel(),
            origin_steps=self.config.num_ddim_timesteps,
        )

    # ----------------------------------------------------------------------------- the loss

    def draw(self, latents: Tensor, generator: torch.Generator | None = None) -> ConsistencyDraws:
        """Solver index, noise and guidance scale per sample, in the official order."""
        c = self.config
        b, device = latents.shape[0], latents.device
        index = torch.randint(0, c.num_ddim_timesteps, (b,), generator=generator, device=device)
        noise = torch.randn(latents.shape, generator=generator, device=device, dtype=torch.float32)
        w = (c.w_max - c.w_min) * torch.rand((b,), generator=generator, device=device) + c.w_min
        return ConsistencyDraws(index=index, noise=noise.to(latents.dtype), w=w)

    def forward(self, batch: TrainBatch, generator: torch.Generator | None = None) -> ObjectiveOutput:
        draws = self.draw(batch.latents, generator)
        batch = swap_captions(batch, self.config.caption_swap_probability, generator)
        terms = self.distillation_terms(batch, draws)
        logs: dict[str, float | Tensor] = {"loss_cd": terms.loss.detach()}
        loss = terms.loss
        if self.reward_feedback is not None:
            reward_loss, reward_logs = self._reward_loss(terms, batch, generator)
            if reward_loss is not None:
                loss = loss + reward_loss
                logs.update(reward_logs)
        return ObjectiveOutput(loss=loss, logs=logs)

    def _reward_loss(
        self, terms: ConsistencyTerms, batch: TrainBatch, generator: torch.Generator | None
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """The reward terms on f_θ of the clips chosen by reward_timestep_range and reward_swapped_clips
        (None if there is none)."""
        c, captions, t = self.config, batch.captions, terms.start_timesteps
        skip_swapped = not c.reward_swapped_clips and batch.swapped is not None
        if c.reward_timestep_range is None and not skip_swapped:
            return self.reward_feedback(terms.f_theta, captions, generator)
        if len(captions) != t.numel():
            raise ConfigError(f"reward terms need the batch's captions, got {len(captions)} for {t.numel()} clips")
        keep = torch.ones_like(t, dtype=torch.bool)
        if c.reward_timestep_range is not None:
            low, high = c.reward_timestep_range
            keep &= (t >= low) & (t <= high)
        if skip_swapped:
            keep &= ~batch.swapped.to(keep.device)
        chosen = keep.nonzero().flatten()
        if chosen.numel() == 0:
            return None, {}
        return self.reward_feedback(terms.f_theta[chosen], [captions[i] for i in chosen.tolist()], generator)

    def _target_model(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.target_ema is None:
            return self.model(*args, **kwargs)
        weights = {
            name: shadow.to(self.model.get_parameter(name).dtype) for name, shadow in self.target_ema.tensors().items()
        }
        return functional_call(self.model, weights, args, kwargs)

    def distillation_terms(self, batch: TrainBatch, draws: ConsistencyDraws) -> ConsistencyTerms:
        """The consistency loss for explicit draws; ``forward`` calls it after drawing them."""
        c = self.config
        z0 = batch.latents.float()
        noise = draws.noise.float()
        if noise.shape != z0.shape:
            raise ConfigError(f"noise {tuple(noise.shape)} must have the latents' shape {tuple(z0.shape)}")
        fps = c.fps if c.fps is not None else batch.fps
        w = draws.w.to(device=z0.device, dtype=torch.float32)
        index = draws.index.to(z0.device)

        t_s, t_e = solver_interval(index, self.solver_timesteps, c.skip)
        alpha_s, alpha_e = self.alphas_cumprod[t_s], self.alphas_cumprod[t_e]
        alpha_prev = self.solver_alphas_prev[index]
        c_skip_s, c_out_s = consistency_boundary_scalings(t_s, c.sigma_data, c.timestep_scaling)
        c_skip_e, c_out_e = consistency_boundary_scalings(t_e, c.sigma_data, c.timestep_scaling)
        w_embedding = guidance_scale_embedding(w, self.model.config.time_cond_proj_dim)

        z_ts = _per_sample(alpha_s, z0).sqrt() * z0 + _per_sample(1.0 - alpha_s, z0).sqrt() * noise
        student_eps = self.model(z_ts, t_s, batch.context, fps=fps, timestep_cond=w_embedding).float()
        student_x0 = predicted_original_sample(z_ts, student_eps, alpha_s)
        f_theta = _per_sample(c_skip_s, z_ts) * z_ts + _per_sample(c_out_s, z_ts) * student_x0

        with torch.no_grad():
            eps_cond = self.teacher(z_ts, t_s, batch.context, fps=fps).float()
            uncond_fps = None if c.uncond_fps_quirk else fps  # None: the U-Net's default fps (16)
            eps_uncond = self.teacher(z_ts, t_s, batch.uncond_context, fps=uncond_fps).float()
            x0_cond = predicted_original_sample(z_ts, eps_cond, alpha_s)
            x0_uncond = predicted_original_sample(z_ts, eps_uncond, alpha_s)
            guided_x0 = lcm_guidance(x0_cond, x0_uncond, w)
            guided_eps = lcm_guidance(eps_cond, eps_uncond, w)
            z_te = ddim_step(guided_x0, guided_eps, alpha_prev)

            target_eps = self._target_model(
                z_te.float(), t_e, batch.context, fps=fps, timestep_cond=w_embedding
            ).float()
            target_x0 = predicted_original_sample(z_te, target_eps, alpha_e)
            target = _per_sample(c_skip_e, z_te) * z_te + _per_sample(c_out_e, z_te) * target_x0

        difference = f_theta.float() - target.float()
        loss = torch.mean(torch.sqrt(difference**2 + c.huber_c**2) - c.huber_c)
        return ConsistencyTerms(
            start_timesteps=t_s,
            end_timesteps=t_e,
            alpha_prev=alpha_prev,
            c_skip_start=c_skip_s,
            c_out_start=c_out_s,
            c_skip_end=c_skip_e,
            c_out_end=c_out_e,
            w_embedding=w_embedding,
            z_ts=z_ts,
            student_eps=student_eps,
            student_x0=student_x0,
            f_theta=f_theta,
            teacher_eps_cond=eps_cond,
            teacher_eps_uncond=eps_uncond,
            teacher_x0_cond=x0_cond,
            teacher_x0_uncond=x0_uncond,
            guided_x0=guided_x0,
            guided_eps=guided_eps,
            z_te=z_te,
            target_eps=target_eps,
            target_x0=target_x0,
            target=target,
            loss=loss,
        )



# ----------------------------------------------------------------------------- `hummingbird train consistency`


@dataclass(frozen=True)
class LoraSettings:
    """`objective.lora`: the adapter `trainable: lora` injects (training.lora.add_lora)."""

    rank: int = DEFAULT_RANK
    alpha: float | None = None  # None: scale 1.0, as released; else alpha / rank
    dropout: float = DEFAULT_DROPOUT  # Linear and Conv2d layers
    conv3d_dropout: float = DEFAULT_CONV3D_DROPOUT  # the temporal convs


@dataclass(frozen=True)
class ConsistencySettings(ConsistencyDistillationConfig):
    """The `objective:` section of `hummingbird train consistency`: the loss settings of
    `ConsistencyDistillationConfig` plus the student, what of it trains, and the reward terms.
    The teacher is `model.unet` (frozen, eval mode); its VAE decodes frames for the rewards."""

    # The stage-1 student: a model folder, U-Net folder or checkpoint file; or null and ...
    student: str | None = None
    # ... hb-0.9b, hb-0.7b or a LAYOUT.yaml: prune it from the teacher on the fly (skips stage 1; smoke tests).
    layout: str | None = None
    # Width of the guidance embedding projection added to a student that has none.
    guidance_projection_dim: int = GUIDANCE_EMBEDDING_DIM
    # "lora": only LoRA weights train (as released); "full": every student weight trains.
    trainable: Literal["lora", "full"] = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    rewards: tuple[RewardSpec, ...] = ()
    # Seed of the fresh weights (guidance projection, LoRA init): the same on every rank.
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_student_source(self.student, self.layout)
        if self.trainable not in ("lora", "full"):
            raise ConfigError(f"objective.trainable must be 'lora' or 'full', got {self.trainable!r}")
        if self.guidance_projection_dim < 1:
            raise ConfigError(f"objective.guidance_projection_dim must be positive, got {self.guidance_projection_dim}")

    def loss_config(self) -> ConsistencyDistillationConfig:
        fields = dataclasses.fields(ConsistencyDistillationConfig)
        return ConsistencyDistillationConfig(**{f.name: getattr(self, f.name) for f in fields})


def build_consistency_objective(settings: ConsistencySettings, components: Any) -> ConsistencyDistillationObjective:
    teacher = components.unet
    if not isinstance(teacher, UNet3D):
        raise ConfigError(f"stage 2 distils a UNet3D teacher (model.unet), got {type(teacher).__name__}")
    student = student_unet(settings.student, settings.layout, teacher)
    with seeded(settings.seed):
        if student.config.time_cond_proj_dim is None:
            student = add_guidance_projection(student, settings.guidance_projection_dim)
        if settings.trainable == "lora":
            lora = settings.lora
            add_lora(student, lora.rank, lora.alpha, lora.dropout, lora.conv3d_dropout)
        else:
            student.requires_grad_(True)
    rewards = build_reward_terms(settings.rewards)
    return ConsistencyDistillationObjective(
        student,
        teacher,
        config=settings.loss_config(),
        rewards=rewards,
        vae=components.vae if rewards else None,
    )


def consistency_student_config(settings: ConsistencySettings, teacher: UNetConfig | None) -> UNetConfig | None:
    """The trained student's plain U-Net config (with its guidance projection), without loading weights;
    None when the student is a checkpoint file or the teacher's config is unknown."""
    config = student_config(settings.student, settings.layout, teacher)
    if config is None or config.time_cond_proj_dim is not None:
        return config
    return config.replace(time_cond_proj_dim=settings.guidance_projection_dim)


register_objective(
    ObjectiveSpec(
        name="consistency",
        command="consistency",
        settings_class=ConsistencySettings,
        build=build_consistency_objective,
        description="stage 2: consistency distillation of the DDIM teacher (model.unet) into the stage-1 student "
        "(objective.student), LoRA or full fine-tuning, with reward feedback (objective.rewards)",
    )
)
