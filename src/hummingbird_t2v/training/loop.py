"""The one training loop: every objective (base diffusion, stage-1 and stage-2 distillation) runs here.

Per optimizer step, on every process:
  1. `grad_accum` micro-batches from this rank's shard of the data (training.data);
  2. the frozen VAE encodes the clips to latents and the frozen text encoder the captions to
     context (the empty prompt's embedding is computed once and reused), giving a `TrainBatch`;
  3. the objective returns a loss; gradients are accumulated (DDP syncs only on the last
     micro-batch), clipped, and AdamW steps; the LR schedule steps; the EMA copy is updated;
  4. every `logging.every` steps the loss (averaged over ranks) goes to the CSV / TensorBoard,
     every `sample.every` steps rank 0 writes sample videos with the EMA weights, and every
     `checkpoint.every` steps a resumable checkpoint is written atomically (training.checkpointing).
At the end the EMA network, the frozen VAE and the text encoder are exported as a model folder
that `HummingbirdPipeline.from_pretrained` (and `hummingbird generate --model`) loads.

Launch: plain `python`/`hummingbird train ...` for one process (CPU or one GPU), or
`torchrun --nproc_per_node N` / `accelerate launch` for DDP; accelerate reads the launcher's
environment. All randomness a step uses comes from per-rank seeded streams whose states are
checkpointed, so on the CPU an interrupted and resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn

from hummingbird_t2v.checkpoints.unet_keys import check_state_dict_fits
from hummingbird_t2v.data.video_io import write_video
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.pipelines.config import SamplingDefaults
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline, slugify, to_uint8
from hummingbird_t2v.training import checkpointing as ckpt
from hummingbird_t2v.training.components import (
    Components,
    build_components,
    check_compatible,
)
from hummingbird_t2v.training.config import (
    OptimConfig,
    RunConfig,
    TrainConfig,
    save_config,
)
from hummingbird_t2v.training.data import ShardedBatches, batch_loader, build_source
from hummingbird_t2v.training.ema import EMAModel
from hummingbird_t2v.training.logging import MetricsLogger, truncate_step_file
from hummingbird_t2v.training.objective import Objective, TrainBatch
from hummingbird_t2v.training.objectives import build_objective

__all__ = [
    "TrainResult",
    "Trainer",
    "export_run",
    "lr_multiplier",
    "make_optimizer",
    "parameter_groups",
    "resolve_mixed_precision",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FOLDER = "checkpoints"
MODEL_FOLDER = "model"
SAMPLES_FOLDER = "samples"
CONFIG_FILE = "config.yaml"


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None  # the last checkpoint written
    model_dir: Path | None  # the exported model folder (rank 0; None elsewhere)
    loss: float | None  # mean loss over the last logging window


# ------------------------------------------------------------------------------- settings helpers


def resolve_mixed_precision(choice: str, on_cpu: bool) -> str:
    """The accelerate `mixed_precision` for a config value ("auto" picks per device)."""
    if choice == "auto":
        if on_cpu:
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "fp16" and on_cpu:
        raise ConfigError("run.mixed_precision fp16 needs a GPU; use bf16 or no on the CPU")
    return choice


def lr_multiplier(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Factor on optim.lr after `step` optimizer steps: linear warm-up, then constant or cosine."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    span = max(1, max_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine


def parameter_groups(module: nn.Module, optim: OptimConfig) -> list[dict[str, Any]]:
    """The trainable parameters of `module` as optimizer groups, one per learning-rate factor.

    `optim.lr_multipliers` maps dotted module names to factors on optim.lr (the longest matching name
    wins); every other parameter has factor 1. Each group records its factor as `lr_factor`.
    """
    factors: dict[float, list[nn.Parameter]] = {}
    matched: set[str] = set()
    names = sorted(optim.lr_multipliers, key=len, reverse=True)
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        prefix = next((n for n in names if name == n or name.startswith(n + ".")), None)
        if prefix is not None:
            matched.add(prefix)
        factors.setdefault(float(optim.lr_multipliers[prefix]) if prefix else 1.0, []).append(param)
    missing = sorted(set(names) - matched)
    if missing:
        roots = sorted({name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad})
        raise ConfigError(
            f"optim.lr_multipliers names {missing}, which match no trainable parameter; use dotted module names "
            f"of the trained model (its top-level trainable modules: {', '.join(roots)})"
        )
    return [{"params": params, "lr": optim.lr * factor, "lr_factor": factor} for factor, params in sorted(factors.items())]


def make_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over `params` (only what requires gradients, e.g. the LoRA weights; or parameter groups
    with their own `lr`), torch's or 8-bit."""
    options = {"lr": optim.lr, "betas": optim.betas, "eps": optim.eps, "weight_decay": optim.weight_decay}
    if optim.name == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise ConfigError(
                "optim.name adamw8bit needs bitsandbytes: pip install bitsandbytes (it runs on CUDA GPUs), "
                "or set optim.name=adamw"
            ) from None
        return bitsandbytes.optim.AdamW8bit(params, **options)
    return torch.optim.AdamW(params, **options)


def _make_accelerator(run: RunConfig) -> Accelerator:
    if run.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device is cuda but torch sees no GPU here; set run.device=cpu or auto")
    on_cpu = run.device == "cpu" or not torch.cuda.is_available()
    ddp = DistributedDataParallelKwargs(find_unused_parameters=run.find_unused_parameters)
    return Accelerator(
        cpu=on_cpu,
        mixed_precision=resolve_mixed_precision(run.mixed_precision, on_cpu),
        kwargs_handlers=[ddp],
    )


def _rank_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _supported_kwargs(fn: Any, **kwargs: Any) -> dict[str, Any]:
    """The subset of `kwargs` that `fn` accepts (VAEs from other code may lack sample/chunk options)."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in parameters}


# ------------------------------------------------------------------------------- the trainer


class Trainer:
    """Build everything from a `TrainConfig`, then `train()`; `export()` writes a model folder.

    `resume`: False starts fresh (and refuses an output folder that already has checkpoints),
    True continues from the newest checkpoint there (or starts fresh when there is none), a path
    continues from that checkpoint folder.
    """

    def __init__(self, config: TrainConfig, *, resume: bool | str | Path = False) -> None:
        self.config = config
        if config.run.cpu_threads is not None:
            torch.set_num_threads(config.run.cpu_threads)
        self.output_dir = Path(config.output_dir)
        self.checkpoint_root = self.output_dir / CHECKPOINT_FOLDER
        self.accelerator = _make_accelerator(config.run)
        acc = self.accelerator
        self.device = acc.device
        self.rank = acc.process_index
        self.world_size = acc.num_processes
        self.is_main = acc.is_main_process

        checkpoint = self._checkpoint_to_resume(resume)
        self._seed_everything()

        self.components: Components = build_components(config.model)
        self.vae = self.components.vae.to(self.device)
        self.text_encoder = self.components.text_encoder.to(self.device)
        with torch.no_grad():
            self.uncond_context = self.text_encoder.encode([""]).float().to(self.device)
        self.prior = self.components.prior.to(self.device) if self.components.prior is not None else None
        check_compatible(self.components.unet, self.vae, self.uncond_context, self.prior)
        conditioning = config.conditioning
        self._encode_options = _supported_kwargs(
            self.vae.encode,
            sample=conditioning.sample_posterior,
            chunk_size=conditioning.vae_chunk_size,
            generator=None,
        )

        self.objective_module: Objective = build_objective(config.objective, self.components)
        self.trainable: nn.Module = self.objective_module.trainable_module()
        if config.run.gradient_checkpointing:
            enable = getattr(self.trainable, "enable_gradient_checkpointing", None)
            if enable is None:
                raise ConfigError(
                    f"{type(self.trainable).__name__} has no gradient checkpointing; set run.gradient_checkpointing=false"
                )
            enable(True)
        self.objective_module.to(self.device).train()
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the objective's trainable module has no parameters that require gradients")
        optim = config.optim
        optimizer = make_optimizer(parameter_groups(self.trainable, optim), optim)
        # The scheduler is stepped once per optimizer step by this loop (accelerate's prepared
        # scheduler would step once per process).
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, optim, config.run.max_steps)
        )
        self.objective, self.optimizer = acc.prepare(self.objective_module, optimizer)
        self.ema = EMAModel(self.trainable, config.ema.decay, warmup=config.ema.warmup) if config.ema.enabled else None
        if self.ema is not None:
            self.ema.module.to(self.device)

        self.step = 0
        self.data_position = 0  # micro-batches this rank has consumed
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_step: int | None = None
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
        self._batches: ShardedBatches | None = None

    # --------------------------------------------------------------------------- setup

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> Path | None:
        if resume is False:
            if ckpt.list_checkpoints(self.checkpoint_root):
                raise ConfigError(
                    f"{self.output_dir} already holds checkpoints of a run; pass --resume to continue it "
                    "or choose another --output"
                )
            return None
        if resume is True:
            latest = ckpt.latest_checkpoint(self.checkpoint_root)
            if latest is None:
                logger.info("no checkpoint in %s: starting from scratch", self.checkpoint_root)
            return latest
        path = Path(resume)
        if not (path / ckpt.STATE_FILE).is_file():
            raise ConfigError(f"{path} is not a training checkpoint (no {ckpt.STATE_FILE})")
        return path

    def _seed_everything(self) -> None:
        seed = _rank_seed(self.config.run.seed, self.rank)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def _load_checkpoint(self, folder: Path) -> None:
        state = ckpt.read_state(folder)
        weights = ckpt.load_tensors(folder / ckpt.MODEL_FILE, self.device)
        check_state_dict_fits(self.trainable, weights, component=f"trainable network of {folder}")
        self.trainable.load_state_dict(weights)
        if self.ema is not None:
            ema_path = folder / ckpt.EMA_FILE
            if ema_path.is_file():
                self.ema.load_state_dict(ckpt.load_tensors(ema_path, self.device), state.ema_updates)
            else:
                logger.warning(
                    "%s has no EMA weights; the EMA starts again from the current weights",
                    folder,
                )
                self.ema = EMAModel(self.trainable, self.config.ema.decay, warmup=self.config.ema.warmup)
                self.ema.module.to(self.device)
        extra_path = folder / ckpt.OBJECTIVE_FILE
        self.objective_module.load_extra_state_dict(
            ckpt.load_tensors(extra_path, self.device) if extra_path.is_file() else {}
        )
        factors = [group["lr_factor"] for group in self.optimizer.param_groups]
        optimizer_state = ckpt.load_optimizer_state(folder / ckpt.OPTIMIZER_FILE)
        saved_factors = [group.get("lr_factor", 1.0) for group in optimizer_state["param_groups"]]
        saved_sizes = [len(group["params"]) for group in optimizer_state["param_groups"]]
        sizes = [len(group["params"]) for group in self.optimizer.param_groups]
        if saved_factors != factors or saved_sizes != sizes:
            raise ConfigError(
                f"{folder} was trained with other optim.lr_multipliers or other trainable parameters (learning-rate "
                f"factors {saved_factors} over {saved_sizes} tensors, now {factors} over {sizes}); resume with the run's own "
                "config, or start a new run from its exported model"
            )
        self.optimizer.load_state_dict(optimizer_state)
        for group, factor in zip(self.optimizer.param_groups, factors):
            group["lr_factor"] = factor  # absent from the states of runs before optim.lr_multipliers
        self.lr_scheduler.load_state_dict(state.lr_scheduler)
        saved_lr = self.lr_scheduler.base_lrs[0] / factors[0]
        if not math.isclose(saved_lr, self.config.optim.lr, rel_tol=1e-9):
            # The schedule's shape already follows the config (run.max_steps, warm-up); a changed
            # peak must too, or a resume with --set optim.lr=... would silently keep the old one.
            logger.warning("optim.lr changed from %g to %g at the resume: the schedule goes on from step %d with the new peak",
                           saved_lr, self.config.optim.lr, state.step)
            self.lr_scheduler.base_lrs = [self.config.optim.lr * factor for factor in factors]
            rate = lr_multiplier(state.step, self.config.optim, self.config.run.max_steps)
            for group, base in zip(self.optimizer.param_groups, self.lr_scheduler.base_lrs):
                group["initial_lr"], group["lr"] = base, base * rate
        scaler = self.accelerator.scaler
        if scaler is not None and state.grad_scaler:
            scaler.load_state_dict(state.grad_scaler)
        self.step = state.step
        self.data_position = state.data_position
        self.last_checkpoint = folder
        self.last_checkpoint_step = state.step
        if state.world_size != self.world_size:
            logger.warning(
                "%s was written by %d processes, this run has %d: the data order from here differs from "
                "an uninterrupted run",
                folder,
                state.world_size,
                self.world_size,
            )
        if not ckpt.load_rng_state(folder, self.rank, self.generator):
            logger.warning(
                "%s has no RNG state for rank %d; this rank's random streams start afresh",
                folder,
                self.rank,
            )
        if self.is_main:
            logger.info("resumed from %s (step %d)", folder, self.step)

    # --------------------------------------------------------------------------- conditioning

    @torch.no_grad()
    def condition(self, batch: dict[str, Any]) -> TrainBatch:
        """Raw batch -> TrainBatch: frozen VAE latents, caption context, cached empty-prompt context."""
        video = batch["video"].to(self.device, non_blocking=True)
        captions = list(batch["caption"])
        options = dict(self._encode_options)
        if "generator" in options and options.get("sample", True):
            options["generator"] = self.generator  # posterior sampling draws from the checkpointed stream
        with self.accelerator.autocast():
            latents = self.vae.encode(video, **options)
            context = self.text_encoder.encode(captions)
        b = latents.shape[0]
        return TrainBatch(
            latents=latents.float(),
            context=context.float().to(self.device),
            uncond_context=self.uncond_context.expand(b, -1, -1),
            fps=batch["fps"].to(self.device),
            captions=captions,
        )

    # --------------------------------------------------------------------------- training

    def _data(self) -> ShardedBatches:
        if self._batches is None:
            data = self.config.data
            self._batches = ShardedBatches(
                build_source(data),
                data.batch_size,
                rank=self.rank,
                world_size=self.world_size,
                shuffle_seed=data.shuffle_seed,
                max_consecutive_failures=data.max_consecutive_failures,
            )
        return self._batches

    def train(self) -> TrainResult:
        config = self.config
        acc = self.accelerator
        max_steps = config.run.max_steps
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.output_dir / CONFIG_FILE)
            for stale in ckpt.remove_stale_staging(self.checkpoint_root):
                logger.info("removed the half-written checkpoint %s", stale)
        acc.wait_for_everyone()
        resumed_at = self.step if self.last_checkpoint is not None else None
        metrics = MetricsLogger(
            self.output_dir,
            enabled=self.is_main,
            tensorboard=config.logging.tensorboard,
            resume_step=resumed_at,
        )
        paths_file = self._paths_file(resumed_at)

        stream = batch_loader(
            self._data(),
            self.data_position,
            num_workers=config.data.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        window: dict[str, Any] = {
            "loss": [],
            "logs": {},
            "skipped": 0,
            "start": time.perf_counter(),
            "steps": 0,
        }
        last_loss = None
        try:
            while self.step < max_steps:
                step_logs = self._train_step(stream, window, paths_file)
                if self.step % config.logging.every == 0 or self.step == max_steps:
                    last_loss = self._flush_metrics(window, metrics, step_logs)
                if config.sample.every and self.step % config.sample.every == 0 and self.step < max_steps:
                    self.write_samples()
                if config.checkpoint.every and self.step % config.checkpoint.every == 0:
                    self.save_checkpoint()
        finally:
            del stream  # stops DataLoader workers
            metrics.close()
            if paths_file is not None:
                paths_file.close()
        if self.last_checkpoint_step != self.step:
            self.save_checkpoint()
        self.write_samples()
        model_dir = self.export() if self.is_main else None
        acc.wait_for_everyone()
        return TrainResult(
            step=self.step,
            checkpoint=self.last_checkpoint,
            model_dir=model_dir,
            loss=last_loss,
        )

    def _train_step(self, stream: Any, window: dict[str, Any], paths_file: Any) -> dict[str, Any]:
        acc = self.accelerator
        accum = self.config.run.grad_accum
        for micro in range(accum):
            raw = next(stream)
            self.data_position += 1
            window["skipped"] += len(raw["skipped"])
            if paths_file is not None:
                paths_file.writelines(f"{self.step + 1}\t{path}\n" for path in raw["path"])
            batch = self.condition(raw)
            # DDP all-reduces gradients only on the last micro-batch of the step.
            sync = nullcontext() if micro == accum - 1 else acc.no_sync(self.objective)
            with sync:
                with acc.autocast():
                    output = self.objective(batch, self.generator)
                acc.backward(output.loss / accum)
            window["loss"].append(output.loss.detach().float())
            for name, value in output.logs.items():
                window["logs"].setdefault(name, []).append(torch.as_tensor(value, dtype=torch.float32).detach())
        clip = self.config.optim.grad_clip
        grad_norm = acc.clip_grad_norm_(self.params, clip if clip is not None else math.inf)
        lr = self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["lr_factor"]  # optim.lr's rate this step
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.trainable)
        self.objective_module.after_optimizer_step()
        self.step += 1
        window["steps"] += 1
        return {
            "grad_norm": grad_norm,
            "lr": lr,
            "skipped_step": acc.optimizer_step_was_skipped,
        }

    def _flush_metrics(self, window: dict[str, Any], metrics: MetricsLogger, step_logs: dict[str, Any]) -> float:
        acc = self.accelerator
        names = sorted(window["logs"])
        local = [torch.stack(window["loss"]).mean()] + [torch.stack(window["logs"][n]).float().mean() for n in names]
        averaged = acc.reduce(torch.stack(local).to(self.device), reduction="mean")
        skipped = acc.reduce(torch.tensor(float(window["skipped"]), device=self.device), reduction="sum")
        elapsed = time.perf_counter() - window["start"]
        samples = window["steps"] * self.config.data.batch_size * self.config.run.grad_accum * self.world_size
        values = averaged.tolist()
        row = {
            "loss": values[0],
            "lr": step_logs["lr"],
            "grad_norm": float(step_logs["grad_norm"]),
            "samples_per_s": samples / elapsed if elapsed > 0 else 0.0,
            "skipped_clips": float(skipped),
            **dict(zip(names, values[1:])),
        }
        if self.ema is not None:
            row["ema_decay"] = self.ema.current_decay()
        metrics.log(self.step, row)
        if self.is_main:
            logger.info(
                "step %d/%d  loss %.4f  lr %.3g  grad_norm %.3g  %.2f samples/s%s",
                self.step,
                self.config.run.max_steps,
                row["loss"],
                row["lr"],
                row["grad_norm"],
                row["samples_per_s"],
                "  (fp16 overflow: step skipped)" if step_logs["skipped_step"] else "",
            )
        window.update(loss=[], logs={}, skipped=0, start=time.perf_counter(), steps=0)
        return row["loss"]

    def _paths_file(self, resumed_at: int | None) -> Any:
        if not self.config.data.record_paths:
            return None
        path = self.output_dir / "data" / f"rank-{self.rank:05d}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        if resumed_at is not None:
            truncate_step_file(path, resumed_at, header=False)
        elif path.exists():
            path.unlink()
        return path.open("a", encoding="utf-8")

    # --------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self) -> Path:
        """Write a resumable checkpoint of the current step (a collective: call it on every rank)."""
        acc = self.accelerator
        if self.is_main:
            ckpt.prepare_staging(self.checkpoint_root, self.step)
        acc.wait_for_everyone()
        staging = ckpt.staging_path(self.checkpoint_root, self.step)
        ckpt.save_rng_state(staging, self.rank, self.generator)
        acc.wait_for_everyone()
        if self.is_main:
            ckpt.save_tensors(staging / ckpt.MODEL_FILE, self.trainable.state_dict())
            if self.ema is not None:
                ckpt.save_tensors(staging / ckpt.EMA_FILE, self.ema.state_dict())
            extra = self.objective_module.extra_state_dict()
            if extra:
                ckpt.save_tensors(staging / ckpt.OBJECTIVE_FILE, extra)
            ckpt.save_optimizer_state(staging / ckpt.OPTIMIZER_FILE, self.optimizer.state_dict())
            scaler = acc.scaler
            state = ckpt.CheckpointState(
                step=self.step,
                data_position=self.data_position,
                world_size=self.world_size,
                ema_updates=self.ema.num_updates if self.ema is not None else 0,
                lr_scheduler=self.lr_scheduler.state_dict(),
                grad_scaler=scaler.state_dict() if scaler is not None else None,
            )
            ckpt.write_state(staging, state)
            ckpt.commit_checkpoint(staging, self.config.checkpoint.keep)
            logger.info("saved checkpoint %s", ckpt.checkpoint_name(self.step))
        acc.wait_for_everyone()
        self.last_checkpoint = self.checkpoint_root / ckpt.checkpoint_name(self.step)
        self.last_checkpoint_step = self.step
        return self.last_checkpoint

    # --------------------------------------------------------------------------- samples and export

    def sampling_defaults(self) -> SamplingDefaults:
        s, data = self.config.sample, self.config.data
        return SamplingDefaults(
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            fps=s.fps,
            num_frames=s.num_frames or data.video_length,
            height=s.height or data.height,
            width=s.width or data.width,
            prior_strength=s.prior_strength,
        )

    def pipeline(self) -> HummingbirdPipeline:
        """A pipeline over the EMA weights (the live ones without EMA) and the frozen components."""
        trained = self.ema.module if self.ema is not None else self.trainable
        unet = self.objective_module.exportable_unet(trained)
        pipeline_config = self.objective_module.pipeline_config(self.sampling_defaults())
        return HummingbirdPipeline(unet, self.vae, self.text_encoder, pipeline_config, prior=self.prior)

    def write_samples(self) -> list[Path]:
        """Rank 0 renders `sample.prompts` with the EMA weights to <output>/samples/step-N/*.mp4."""
        written: list[Path] = []
        if self.is_main and self.config.sample.prompts:
            s = self.config.sample
            pipe = self.pipeline()
            was_training = pipe.unet.training
            pipe.unet.eval()
            devices = [self.device] if self.device.type == "cuda" else []
            # Sampling must not consume the training RNG streams (resume would then diverge).
            with torch.random.fork_rng(devices=devices):
                generator = torch.Generator(device=self.device).manual_seed(s.seed)
                frames = pipe(s.prompts, generator=generator, progress=False).frames
            pipe.unet.train(was_training)
            folder = self.output_dir / SAMPLES_FOLDER / ckpt.checkpoint_name(self.step)
            for index, (prompt, clip) in enumerate(zip(s.prompts, frames)):
                path = folder / f"{index:02d}-{slugify(prompt)}.mp4"
                write_video(path, to_uint8(clip), s.fps)
                written.append(path)
        self.accelerator.wait_for_everyone()
        return written

    def export(self, folder: str | Path | None = None) -> Path:
        """Write a model folder (EMA U-Net + frozen VAE and text encoder (+ prior) + sampler settings)."""
        folder = Path(folder) if folder is not None else self.output_dir / MODEL_FOLDER
        pipe = self.pipeline()
        config = pipe.config
        extra = {
            **config.extra,
            "training": {"step": self.step, "objective": self.config.objective["name"]},
        }
        if self.config.data.kind == "toyworld":
            # Which toy prompts the model was taught: `toyworld eval` and `generate` read it back.
            extra["toy_vocabulary"] = self.config.data.toyworld.get("vocabulary", "full")
        pipe.config = dataclasses.replace(config, extra=extra)
        pipe.save_pretrained(folder, overwrite=True)
        logger.info("exported the model (step %d) to %s", self.step, folder)
        return folder

    def close(self) -> None:
        """End the run (destroys the process group of a multi-process launch)."""
        self.accelerator.end_training()


def export_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    output: str | Path | None = None,
) -> Path:
    """Export a model folder from a run's checkpoint (default: its newest) without training."""
    from hummingbird_t2v.training.config import load_config

    run_dir = Path(run_dir)
    config = load_config(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).is_file() else None
    if config is None:
        raise ConfigError(f"{run_dir} has no {CONFIG_FILE}; point --run at the output folder of a training run")
    config.output_dir = str(run_dir)
    if checkpoint is None and ckpt.latest_checkpoint(run_dir / CHECKPOINT_FOLDER) is None:
        raise CheckpointError(f"{run_dir / CHECKPOINT_FOLDER} holds no checkpoint to export")
    trainer = Trainer(config, resume=checkpoint if checkpoint is not None else True)
    return trainer.export(output)
