"""`hummingbird toyworld probe`: does a model's noise prediction use one word of the caption?

    hummingbird toyworld probe --model MODEL_FOLDER --swap direction   # left<->right, up<->down
    hummingbird toyworld probe --model MODEL_FOLDER --swap color --n 64 --timesteps 999,700,400

A video evaluation (`toyworld eval`) says *whether* generated videos follow a word; this says
*why not* in a few minutes, without sampling. Real clips of the evaluation world are noised to a
few timesteps, and the model predicts the noise three times from the same noisy latent: with the
clip's own caption, with the same caption with one word swapped (`--swap`), and with the empty
prompt. A model that uses the word predicts the noise better from the true caption than from the
swapped one, in most clips; a model that ignores it cannot tell the two apart. Per timestep the
table gives the three mean squared errors, the share of the caption's benefit that the word
carries ((swapped - asked) / (empty - asked)), how many clips the asked caption fits better, and
the exact two-sided sign-test p-value of that count.

`--travel` reads the same noisy latents a second way, for the motion swaps: the one-step clean
prediction x̂₀ under each caption is decoded and its object's travel along the clip's own
direction measured (`toy_motion`'s centroid tracker). A model that follows the word moves x̂₀ the
asked way under the true caption and the other way under the swapped one; a model that reads the
direction off the noise moves it the clip's way under both. A last row starts from pure noise
at t = T - 1 (no clip in it), as a sampler does, where only the caption can set the direction.

Swaps (on the first object): direction (left<->right, up<->down and the diagonals mirrored: the
sign of a motion), axis (left/right <-> up/down: its axis), color and shape (the next value of the
vocabulary, never the background's colour). Clips whose object the swap does not apply to (e.g.
a still object for `direction`) are skipped.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from hummingbird_t2v.diffusion.consistency import predicted_original_sample
from hummingbird_t2v.diffusion.schedule import (
    scaled_linear_alphas_cumprod,
    vc2_latent_scale_table,
)
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.rewards.motion import (
    ToyMotionReward,
    foreground_centroids,
    straight_line_travel,
)
from hummingbird_t2v.toyworld.captions import canonical_caption
from hummingbird_t2v.toyworld.compare import exact_mcnemar_p
from hummingbird_t2v.toyworld.evaluator import EVAL_WORLD_SEED, align_columns
from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.scene import (
    SceneSpec,
    SceneVocabulary,
    resolve_vocabulary,
)

__all__ = [
    "SWAPS",
    "ProbeRow",
    "TravelRow",
    "add_probe_parser",
    "format_probe",
    "format_travel",
    "probe_caption_word",
    "probe_direction_travel",
    "swap_word",
]

_OPPOSITE = {
    "left": "right", "right": "left", "up": "down", "down": "up",
    "up_left": "down_right", "down_right": "up_left", "up_right": "down_left", "down_left": "up_right",
}
_OTHER_AXIS = {"left": "up", "right": "down", "up": "left", "down": "right"}
SWAPS = ("direction", "axis", "color", "shape")
DEFAULT_TIMESTEPS = (999, 900, 800, 700, 500, 300)


def _next_value(values: Sequence[str], current: str, avoid: set[str]) -> str | None:
    start = values.index(current) if current in values else -1
    for offset in range(1, len(values) + 1):
        candidate = values[(start + offset) % len(values)]
        if candidate != current and candidate not in avoid:
            return candidate
    return None


def swap_word(scene: SceneSpec, swap: str, vocabulary: SceneVocabulary) -> SceneSpec | None:
    """`scene` with its first object's `swap` attribute changed, or None where it does not apply."""
    first = scene.objects[0]
    if swap == "direction":
        changed = _OPPOSITE.get(first.motion)
        field = "motion"
    elif swap == "axis":
        changed = _OTHER_AXIS.get(first.motion)
        field = "motion"
    elif swap == "color":
        changed = _next_value(vocabulary.colors, first.color, {scene.background.color})
        field = "color"
    elif swap == "shape":
        changed = _next_value(vocabulary.shapes, first.shape, set())
        field = "shape"
    else:
        raise ConfigError(f"unknown swap {swap!r}; choose one of {', '.join(SWAPS)}")
    if changed is None:
        return None
    return replace(scene, objects=(replace(first, **{field: changed}), *scene.objects[1:]))


@dataclass(frozen=True)
class ProbeRow:
    timestep: int
    asked: float  # mean squared error of the predicted noise, true caption
    swapped: float  # ... one word swapped
    empty: float  # ... empty prompt
    prefers_asked: int  # clips whose true caption predicts the noise better than the swapped one
    prefers_swapped: int

    @property
    def word_share(self) -> float:
        """How much of the caption's benefit over the empty prompt the swapped word carries."""
        benefit = self.empty - self.asked
        return (self.swapped - self.asked) / benefit if benefit > 0 else float("nan")

    @property
    def p_value(self) -> float:
        return exact_mcnemar_p(self.prefers_asked, self.prefers_swapped)


@dataclass(frozen=True)
class TravelRow:
    """How far x̂₀ moves along each clip's own direction (frame units: the short side spans 2)."""

    source: str  # "clean clip" (the clips themselves), "t=<step>", or "pure noise" (no clip in the latent)
    count: int
    travel: dict[str, float]  # caption kind (asked, swapped, empty) -> mean travel along the clip's direction
    true_way: dict[str, int]  # caption kind -> clips whose x̂₀ moves the clip's way


def _probe_clips(
    count: int, swap: str, world_seed: int, vocabulary: SceneVocabulary, num_frames: int, height: int, width: int, fps: int
) -> tuple[np.ndarray, list[str], list[str]]:
    """The first `count` clips of the world whose object `swap` applies to: frames, captions, swapped captions."""
    world = ToyWorld(
        ToyWorldConfig(height=height, width=width, num_frames=num_frames, fps=fps, seed=world_seed, paraphrase=False, vocabulary=vocabulary)
    )
    frames, asked, swapped = [], [], []
    index = 0
    # A vocabulary where the swap never applies (e.g. no moving objects) would loop forever.
    limit = max(1000, 50 * count)
    while len(frames) < count:
        if index >= limit:
            raise ConfigError(f"found only {len(frames)} of {count} clips whose object a '{swap}' swap applies to in {limit} scenes; pick another --swap or vocabulary")
        scene = world.scene(index)
        other = swap_word(scene, swap, vocabulary)
        if other is not None:
            frames.append(world.clip(index).frames)
            asked.append(canonical_caption(scene))
            swapped.append(canonical_caption(other))
        index += 1
    return np.stack(frames), asked, swapped


def _timestep_noise(shape: Sequence[int], seed: int, num_train_timesteps: int, t: int) -> torch.Tensor:
    """The probe's noise for timestep t: its own seed, so a row depends on neither --batch-size nor
    the other timesteps probed."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed * num_train_timesteps + t))


@dataclass
class _Probe:
    """What every reading of a probe shares: the clips, their captions, the noising and the noise."""

    pipe: Any
    frames: np.ndarray
    asked: list[str]
    swapped: list[str]
    timesteps: list[int]
    alphas_cumprod: torch.Tensor
    latent_scale: torch.Tensor | None
    noises: list[torch.Tensor]

    @classmethod
    def prepare(
        cls, pipe: Any, swap: str, count: int, timesteps: Sequence[int], world_seed: int,
        vocabulary: SceneVocabulary | str | None, seed: int, batch_size: int,
    ) -> _Probe:
        if count < 1 or batch_size < 1:
            raise ConfigError(f"need --n >= 1 and --batch-size >= 1, got {count} and {batch_size}")
        c, d = pipe.config, pipe.config.defaults
        if not timesteps or any(not 0 <= t < c.num_train_timesteps for t in timesteps):
            raise ConfigError(f"timesteps must lie in 0..{c.num_train_timesteps - 1}, got {list(timesteps)}")
        if pipe.unet.config.time_cond_proj_dim:
            raise ConfigError("the probe reads a teacher's eps prediction; this model is a consistency student (guidance projection)")
        frames, asked, swapped = _probe_clips(count, swap, world_seed, resolve_vocabulary(vocabulary), d.num_frames, d.height, d.width, d.fps)
        # The noising the teacher was trained with (diffusion objective) and samples with (DDIM),
        # VideoCrafter2's latent rescale included where the model uses it.
        alphas_cumprod = scaled_linear_alphas_cumprod(c.num_train_timesteps, c.beta_start, c.beta_end, precision="float64_then_float32")
        latent_scale = vc2_latent_scale_table(c.num_train_timesteps, scale_b=c.scale_b) if c.use_scale else None
        # The noise of timestep t comes from its own seed, all clips at once: a row does not depend on
        # --batch-size or on which other timesteps are probed.
        factor = pipe.vae.config.downsample_factor
        shape = (count, pipe.unet.config.in_channels, d.num_frames, d.height // factor, d.width // factor)
        noises = [_timestep_noise(shape, seed, c.num_train_timesteps, t) for t in timesteps]
        return cls(pipe, frames, asked, swapped, list(timesteps), alphas_cumprod, latent_scale, noises)

    def batches(self, batch_size: int) -> Iterator[tuple[slice, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]:
        """Per chunk of clips: (slice, clean latents, caption kind -> context, fps)."""
        pipe, d = self.pipe, self.pipe.config.defaults
        for start in range(0, len(self.asked), batch_size):
            chunk = slice(start, start + batch_size)
            video = torch.from_numpy(self.frames[chunk]).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
            latents = pipe.vae.encode(video.to(pipe.device, pipe.dtype)).float()
            b = latents.shape[0]
            contexts = {
                "asked": pipe.encode_prompt(self.asked[chunk]),
                "swapped": pipe.encode_prompt(self.swapped[chunk]),
                "empty": pipe.encode_prompt([""] * b),
            }
            fps = torch.full((b,), d.fps, dtype=torch.long, device=pipe.device)
            yield chunk, latents, contexts, fps

    def noised(self, latents: torch.Tensor, row: int, chunk: slice) -> torch.Tensor:
        t = self.timesteps[row]
        clean = latents * self.latent_scale[t] if self.latent_scale is not None else latents
        alpha_bar = self.alphas_cumprod[t]
        noise = self.noises[row][chunk].to(latents.device)
        return alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise

    def predict(self, noisy: torch.Tensor, t: int, context: torch.Tensor, fps: torch.Tensor) -> torch.Tensor:
        t_batch = torch.full((noisy.shape[0],), t, device=self.pipe.device)
        return self.pipe.unet(noisy.to(self.pipe.dtype), t_batch, context, fps=fps).float()


@torch.no_grad()
def probe_caption_word(
    pipe: Any,
    *,
    swap: str,
    count: int = 32,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    world_seed: int = EVAL_WORLD_SEED,
    vocabulary: SceneVocabulary | str | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> list[ProbeRow]:
    """One ProbeRow per timestep for `pipe` (a DDIM-sampled HummingbirdPipeline: a teacher)."""
    probe = _Probe.prepare(pipe, swap, count, timesteps, world_seed, vocabulary, seed, batch_size)
    errors = {name: torch.zeros(len(timesteps), count) for name in ("asked", "swapped", "empty")}
    for chunk, latents, contexts, fps in probe.batches(batch_size):
        for row, t in enumerate(probe.timesteps):
            noisy = probe.noised(latents, row, chunk)
            noise = probe.noises[row][chunk].to(pipe.device)
            for name, context in contexts.items():
                eps = probe.predict(noisy, t, context, fps)
                errors[name][row, chunk] = (eps - noise).pow(2).flatten(1).mean(1).cpu()
    return [
        ProbeRow(
            timestep=int(t),
            asked=float(errors["asked"][row].mean()),
            swapped=float(errors["swapped"][row].mean()),
            empty=float(errors["empty"][row].mean()),
            prefers_asked=int((errors["asked"][row] < errors["swapped"][row]).sum()),
            prefers_swapped=int((errors["swapped"][row] < errors["asked"][row]).sum()),
        )
        for row, t in enumerate(probe.timesteps)
    ]


@torch.no_grad()
def probe_direction_travel(
    pipe: Any,
    *,
    swap: str = "direction",
    count: int = 32,
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    world_seed: int = EVAL_WORLD_SEED,
    vocabulary: SceneVocabulary | str | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> list[TravelRow]:
    """How far the one-step x̂₀ moves along each clip's own direction, under the true, the swapped and
    the empty caption: a row for the clean clips themselves (the same under every caption), one per
    timestep, then one from pure noise at t = T - 1, where a sampler starts."""
    if swap not in ("direction", "axis"):
        raise ConfigError(f"--travel reads motion; use it with --swap direction or axis, not {swap!r}")
    probe = _Probe.prepare(pipe, swap, count, timesteps, world_seed, vocabulary, seed, batch_size)
    directions = ToyMotionReward().directions(probe.asked)
    sources = ["clean clip"] + [f"t={t}" for t in probe.timesteps] + ["pure noise"]
    travel = {name: torch.zeros(len(sources), count) for name in ("asked", "swapped", "empty")}
    # Pure noise at the step a sampler starts from, with that step's noise seed (as its row's, if probed).
    last = pipe.config.num_train_timesteps - 1
    pure_noise = _timestep_noise(probe.noises[0].shape, seed, pipe.config.num_train_timesteps, last)

    def along(x0: torch.Tensor, chunk: slice, t: int | None) -> torch.Tensor:
        if t is not None and probe.latent_scale is not None:  # back to the latents the VAE decodes, as the sampler's x̂₀
            x0 = x0 / probe.latent_scale[t]
        frames = ((pipe.vae.decode(x0.to(pipe.dtype)).float().transpose(1, 2) + 1) / 2).clamp(0, 1)
        moved = straight_line_travel(foreground_centroids(frames)).cpu()
        return (moved * directions[chunk]).sum(-1)

    for chunk, latents, contexts, fps in probe.batches(batch_size):
        clean = along(latents, chunk, None)
        for values in travel.values():
            values[0, chunk] = clean
        for row, t in enumerate([*probe.timesteps, last]):
            noisy = probe.noised(latents, row, chunk) if row < len(probe.timesteps) else pure_noise[chunk].to(pipe.device)
            for name, context in contexts.items():
                eps = probe.predict(noisy, t, context, fps)
                x0 = predicted_original_sample(noisy.float(), eps, probe.alphas_cumprod[t])
                travel[name][row + 1, chunk] = along(x0, chunk, t)
    return [
        TravelRow(
            source=source,
            count=count,
            travel={name: float(values[row].mean()) for name, values in travel.items()},
            true_way={name: int((values[row] > 0).sum()) for name, values in travel.items()},
        )
        for row, source in enumerate(sources)
    ]


def format_probe(rows: Sequence[ProbeRow]) -> str:
    headers = ["t", "asked", "swapped", "empty", "word share", "asked fits better", "p"]
    body = [
        [
            str(r.timestep),
            f"{r.asked:.5f}",
            f"{r.swapped:.5f}",
            f"{r.empty:.5f}",
            f"{r.word_share:.3f}",
            f"{r.prefers_asked}/{r.prefers_asked + r.prefers_swapped}",
            f"{r.p_value:.3g}",
        ]
        for r in rows
    ]
    return "\n".join(align_columns(headers, body))


def format_travel(rows: Sequence[TravelRow]) -> str:
    headers = ["x̂₀ from", "asked: travel, clip's way", "swapped: travel, clip's way", "empty: travel, clip's way"]
    body = [
        [r.source, *(f"{r.travel[name]:+.3f}, {r.true_way[name]}/{r.count}" for name in ("asked", "swapped", "empty"))]
        for r in rows
    ]
    return "\n".join(align_columns(headers, body))


def _parse_timesteps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--timesteps takes comma-separated integers such as 999,700,400, got {text!r}") from None


def run_probe(args: argparse.Namespace) -> int:
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.toyworld.builtin import (
        builtin_model_folder,
        model_toy_vocabulary,
    )

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = args.model if args.model is not None else builtin_model_folder()
    if model is None:
        raise ConfigError("no built-in toy model in this install; name a teacher model folder with --model")
    vocabulary = args.vocabulary if args.vocabulary is not None else model_toy_vocabulary(model)
    pipe = HummingbirdPipeline.from_pretrained(model, device=args.device)
    timesteps = _parse_timesteps(args.timesteps)
    rows = probe_caption_word(
        pipe, swap=args.swap, count=args.n, timesteps=timesteps, world_seed=args.world_seed,
        vocabulary=vocabulary, seed=args.seed, batch_size=args.batch_size,
    )
    print(f"caption probe of {model}: swap {args.swap}, {args.n} clips of the evaluation world (seed {args.world_seed})")
    print(format_probe(rows))
    if args.travel:
        travel = probe_direction_travel(
            pipe, swap=args.swap, count=args.n, timesteps=timesteps, world_seed=args.world_seed,
            vocabulary=vocabulary, seed=args.seed, batch_size=args.batch_size,
        )
        print("\none-step x̂₀'s travel along each clip's own direction (frame units; a model that follows the word moves")
        print("it the clip's way under the asked caption only; pure noise holds no clip, so only the caption can)")
        print(format_travel(travel))
    return 0


def add_probe_parser(commands: Any) -> None:
    """Register `probe` on the `hummingbird toyworld` sub-command parsers."""
    parser = commands.add_parser(
        "probe",
        help="does a model's noise prediction use one caption word (direction, axis, color, shape)?",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default=None, help="teacher model folder (default: the built-in toy model)")
    parser.add_argument("--swap", choices=SWAPS, required=True, help="which word of the caption to swap")
    parser.add_argument("--n", type=int, default=32, help="number of clips (default 32)")
    parser.add_argument("--travel", action="store_true", help="also decode x̂₀ and read which way it moves (direction, axis swaps)")
    parser.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)), help="comma-separated noise levels")
    parser.add_argument("--world-seed", type=int, default=EVAL_WORLD_SEED, help=f"evaluation world (default {EVAL_WORLD_SEED})")
    parser.add_argument("--vocabulary", default=None, help="toy vocabulary (default: the model's, else full)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.set_defaults(func=run_probe)
