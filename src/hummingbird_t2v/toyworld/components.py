"""The toy world's small autoencoder: trained on toy frames, shipped under assets/toy/vae.

It is the SD VAE family (diffusers' AutoencoderKL through `VideoVAE`) at a small width: three
levels of 32/64/64 channels, one residual block per level, 4 latent channels, so a 64x64 toy
frame becomes a 16x16 latent (downsample factor 4; the SD factor 8 would leave 8x8 latents, too
coarse for objects 10 pixels wide). Training is SD's reconstruction objective without the
perceptual and adversarial terms, which flat toy shapes do not need: an L1 loss plus a KL term
weighted, relative to the per-pixel loss, as SD weights it (1e-6). The latent scaling factor is
1 / std of the latents of held-out clips, as SD chose 0.18215.

Reproduce the shipped VAE (3000 steps, 32 minutes on 2 shared CPU threads; its training.json
records the settings and the held-out PSNR):
    python -m hummingbird_t2v.toyworld.components vae --out src/hummingbird_t2v/assets/toy/vae
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    load_component,
    read_json,
    save_component,
    write_json,
)
from hummingbird_t2v.data.sampling import frames_to_tensor
from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
from hummingbird_t2v.models.word_text_encoder import (
    UNK,
    WordTextEncoder,
    WordTextEncoderConfig,
    split_words,
)
from hummingbird_t2v.toyworld.captions import canonical_caption, paraphrase_caption
from hummingbird_t2v.toyworld.degradations import Degradation
from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.labels import (
    ATTRIBUTE_CLASSES,
    label_tensor,
    scene_attributes,
)
from hummingbird_t2v.toyworld.vocabulary import (
    BACKGROUND_WORDS,
    CAMERA_WORDS,
    COLOR_WORDS,
    DEGRADATIONS,
    MOTION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
)

__all__ = [
    "ASSET_DIR",
    "TOY_TEXT_ENCODER_DIR",
    "TOY_VAE_DIR",
    "ToyVAETraining",
    "VAEReport",
    "latent_scaling_factor",
    "load_toy_vae",
    "main",
    "reconstruction_psnr",
    "train_toy_vae",
]

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "toy"
TOY_VAE_DIR = ASSET_DIR / "vae"
TOY_TEXT_ENCODER_DIR = ASSET_DIR / "text_encoder"
TRAINING_RECORD = "training.json"  # how the shipped component was trained and how well it does

# World seeds: components train on seed 0 (the toy teacher's world); held-out numbers use seed 1.
TRAIN_WORLD_SEED = 0
HELD_OUT_WORLD_SEED = 1


@dataclass(frozen=True)
class ToyVAETraining:
    """Architecture and optimisation of the toy VAE; the defaults made the shipped one."""

    base_channels: int = 32
    channel_multipliers: tuple[int, ...] = (1, 2, 2)
    layers_per_block: int = 1
    latent_channels: int = 4
    # 4-8 channels per GroupNorm group: with one channel per group (SD's 32 groups at this width)
    # the norm removes each channel's image mean, which is all a flat toy background is made of.
    norm_num_groups: int = 8
    steps: int = 3000
    clips_per_batch: int = 16
    frames_per_clip: int = 1  # frames of one clip are nearly alike: many clips teach more
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    kl_weight: float = 1e-6  # relative to the per-pixel L1 loss, as SD weights its KL term
    edge_weight: float = 0.0  # L1 on pixel differences (see _reconstruction_loss); the shipped VAE used none
    degraded_fraction: float = 0.15  # some blurred/noisy/compressed frames, so those reconstruct too
    train_clips: int = 50_000  # clip indices 0..train_clips-1 of the training world
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        if self.steps < 1 or self.clips_per_batch < 1 or self.frames_per_clip < 1 or self.train_clips < 1:
            raise ConfigError("toy VAE training needs steps, clips_per_batch, frames_per_clip and train_clips >= 1")
        if self.learning_rate <= 0 or self.kl_weight < 0:
            raise ConfigError("toy VAE training needs a positive learning_rate and a non-negative kl_weight")

    def vae_config(self, scaling_factor: float = 1.0) -> VAEConfig:
        return VAEConfig(
            base_channels=self.base_channels,
            channel_multipliers=self.channel_multipliers,
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups,
            sample_size=64,
            scaling_factor=scaling_factor,
        )


@dataclass(frozen=True)
class VAEReport:
    """Held-out reconstruction quality (PSNR in dB on uint8 frames) and what training cost."""

    psnr: dict[str, float]  # "clean" and one entry per degradation kind (strength 0.6)
    scaling_factor: float
    parameters: int
    train_seconds: float
    final_loss: float


def warmup_cosine_lr(step: int, peak: float, steps: int, warmup_steps: int) -> float:
    """The word encoder's and the evaluator's schedule: a linear warm-up factor times a cosine
    from the peak to zero over all `steps` (kept as trained, so the shipped assets reproduce)."""
    return peak * min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * step / steps))


def _learning_rate(step: int, config: ToyVAETraining) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _frame_batch(world: ToyWorld, rng: np.random.Generator, config: ToyVAETraining) -> torch.Tensor:
    """(clips_per_batch * frames_per_clip, 3, H, W) in [-1, 1] from random training clips."""
    frames = []
    for index in rng.integers(config.train_clips, size=config.clips_per_batch):
        clip = world.clip(int(index)).frames
        chosen = rng.choice(len(clip), size=min(config.frames_per_clip, len(clip)), replace=False)
        frames.append(clip[np.sort(chosen)])
    stacked = np.concatenate(frames)  # (n, H, W, 3)
    return frames_to_tensor(stacked).permute(1, 0, 2, 3).contiguous()


def _reconstruction_loss(reconstruction: torch.Tensor, frames: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 on pixels plus L1 on horizontal and vertical pixel differences. Objects cover a few
    percent of a toy frame, so plain L1 is content with blurred, off-colour blobs for a long time;
    the difference term charges every blurred edge and is what makes small shapes come out sharp."""
    loss = (reconstruction - frames).abs().mean()
    if edge_weight:
        error = reconstruction - frames
        edges = (error[..., 1:, :] - error[..., :-1, :]).abs().mean() + (error[..., :, 1:] - error[..., :, :-1]).abs().mean()
        loss = loss + edge_weight * edges
    return loss


def _start_with_narrow_posterior(autoencoder: torch.nn.Module, latent_channels: int) -> None:
    """Make the initial posterior std e^-4 instead of 1: with unit noise on the latents the decoder
    sees almost no signal and, at SD's tiny KL weight, spends most of a short run learning to
    shrink it. The log-variance rows of the quantisation conv start at zero weight and bias -8."""
    with torch.no_grad():
        autoencoder.quant_conv.weight[latent_channels:].zero_()
        autoencoder.quant_conv.bias[latent_channels:].fill_(-8.0)


def train_toy_vae(
    config: ToyVAETraining | None = None, *, log: Callable[..., None] | None = print
) -> tuple[VideoVAE, VAEReport]:
    """Train a toy VAE from scratch on rendered toy frames; returns it with held-out numbers."""
    config = config or ToyVAETraining()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    world = ToyWorld(ToyWorldConfig(seed=TRAIN_WORLD_SEED, degraded_fraction=config.degraded_fraction))
    vae = VideoVAE(config.vae_config())
    autoencoder = vae.autoencoder.train()
    _start_with_narrow_posterior(autoencoder, config.latent_channels)
    optimizer = torch.optim.AdamW(autoencoder.parameters(), lr=config.learning_rate, weight_decay=0.0)
    started = time.perf_counter()
    recent: list[float] = []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(step, config)
        frames = _frame_batch(world, rng, config)
        posterior = autoencoder.encode(frames).latent_dist
        reconstruction = autoencoder.decode(posterior.sample()).sample
        pixels = frames[0].numel()
        loss = _reconstruction_loss(reconstruction, frames, config.edge_weight)
        loss = loss + config.kl_weight * posterior.kl().mean() / pixels
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(autoencoder.parameters(), 1.0)
        optimizer.step()
        recent = (recent + [loss.item()])[-50:]
        if log is not None and (step + 1) % 100 == 0:
            elapsed = time.perf_counter() - started
            log(f"vae step {step + 1}/{config.steps}  loss {np.mean(recent):.4f}  {elapsed:.0f}s", flush=True)
    train_seconds = time.perf_counter() - started
    vae.eval()

    held_out = _held_out_clips()
    scale = latent_scaling_factor(vae, [clip for clip in held_out["clean"]])
    vae = _with_scaling_factor(vae, scale)
    report = VAEReport(
        psnr={kind: reconstruction_psnr(vae, clips) for kind, clips in held_out.items()},
        scaling_factor=scale,
        parameters=sum(p.numel() for p in vae.parameters()),
        train_seconds=train_seconds,
        final_loss=float(np.mean(recent)),
    )
    return vae, report


def _held_out_clips(count: int = 32, strength: float = 0.6) -> dict[str, list[np.ndarray]]:
    """Clean clips of the held-out world and the same clips under each degradation."""
    world = ToyWorld(ToyWorldConfig(seed=HELD_OUT_WORLD_SEED))
    clips: dict[str, list[np.ndarray]] = {
        "clean": [world.clip(i, degradation=Degradation()).frames for i in range(count)]
    }
    for kind in DEGRADATIONS:
        clips[kind] = [world.clip(i, degradation=Degradation(kind, strength)).frames for i in range(count)]
    return clips


def _with_scaling_factor(vae: VideoVAE, scaling_factor: float) -> VideoVAE:
    """The same weights under a config that records the latent scaling factor."""
    rescaled = VideoVAE(replace(vae.config, scaling_factor=scaling_factor))
    rescaled.load_state_dict(vae.state_dict())
    return rescaled.eval()


@torch.no_grad()
def latent_scaling_factor(vae: VideoVAE, clips: Sequence[np.ndarray]) -> float:
    """1 / std of the unscaled latents (posterior means) of `clips` (uint8 (T, H, W, 3) each)."""
    latents = [vae.encode(frames_to_tensor(clip)[None]) / vae.scaling_factor for clip in clips]
    return float(1.0 / torch.cat([latent.flatten() for latent in latents]).std())


@torch.no_grad()
def reconstruction_psnr(vae: VideoVAE, clips: Sequence[np.ndarray]) -> float:
    """Mean PSNR (dB) of encode -> decode over `clips`, on the uint8 frames as a viewer sees them."""
    scores = []
    for clip in clips:
        decoded = vae.decode(vae.encode(frames_to_tensor(clip)[None]))[0]  # (3, T, H, W) in ~[-1, 1]
        restored = ((decoded.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).numpy()
        mse = float(np.mean((restored - clip.astype(np.float64)) ** 2))
        scores.append(10 * math.log10(255.0**2 / max(mse, 1e-10)))
    return float(np.mean(scores))


def save_toy_vae(vae: VideoVAE, folder: Path, config: ToyVAETraining, report: VAEReport) -> None:
    """A component folder (config.json + model.safetensors) plus training.json describing the run."""
    save_component(folder, vae, vae.config.to_dict())
    record = {
        "training": asdict(config),
        "report": asdict(report),
        "command": "python -m hummingbird_t2v.toyworld.components vae",
    }
    write_json(Path(folder) / TRAINING_RECORD, record)


def load_toy_vae(folder: Path = TOY_VAE_DIR, *, device: torch.device | str = "cpu") -> VideoVAE:
    """The shipped toy VAE (or one saved by `save_toy_vae`)."""
    folder = Path(folder)
    read_json(folder / CONFIG_NAME)  # a clear error if the folder is not a component
    return load_component(folder, lambda data: VideoVAE(VAEConfig.from_dict(data)), device=device)


# ------------------------------------------------------------------------- word text encoder
@dataclass(frozen=True)
class WordEncoderTraining:
    """The toy word encoder: trained to predict a caption's scene attributes from its tokens."""

    width: int = 128
    layers: int = 2
    heads: int = 4
    context_length: int = 40  # the longest toy caption has 38 words
    steps: int = 1500
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    # Words replaced by <unk> during training, so a prompt with words the encoder never saw
    # still gives sensible features from the words it knows.
    unknown_word_rate: float = 0.1
    seed: int = 0
    threads: int = 2

    def encoder_config(self, vocabulary: tuple[str, ...]) -> WordTextEncoderConfig:
        return WordTextEncoderConfig(
            vocabulary=vocabulary, width=self.width, layers=self.layers, heads=self.heads,
            context_length=self.context_length,
        )


def toy_caption_vocabulary(samples: int = 20_000) -> tuple[str, ...]:
    """Every word of the toy vocabulary's phrases and of a sample of captions (template words), sorted."""
    words: set[str] = set()
    for table in (SHAPE_WORDS, COLOR_WORDS, SIZE_WORDS, MOTION_WORDS, BACKGROUND_WORDS, CAMERA_WORDS):
        for phrases in table.values():
            for phrase in phrases:
                words.update(split_words(phrase.format(c="", c1="", c2="")))
    world = ToyWorld(ToyWorldConfig(seed=TRAIN_WORLD_SEED))
    for index in range(samples):
        words.update(split_words(paraphrase_caption(world.scene(index), np.random.default_rng([index, 1]))))
    return tuple(sorted(words))


def toy_captions(world_seed: int, count: int, *, start: int = 0, paraphrase: bool = True) -> tuple[list[str], list[dict[str, str]]]:
    """Captions and attributes of scenes start..start+count-1 of a world, without rendering pixels."""
    world = ToyWorld(ToyWorldConfig(seed=world_seed))
    captions, attributes = [], []
    for index in range(start, start + count):
        scene = world.scene(index)
        rng = np.random.default_rng([world_seed, index, 7])
        captions.append(paraphrase_caption(scene, rng) if paraphrase else canonical_caption(scene))
        attributes.append(scene_attributes(scene))
    return captions, attributes


def _pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


def train_word_text_encoder(
    config: WordEncoderTraining | None = None, *, log: Callable[..., None] | None = print
) -> tuple[WordTextEncoder, dict[str, Any]]:
    """Train the word encoder on paraphrased captions of the training world (half canonical)."""
    config = config or WordEncoderTraining()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoder = WordTextEncoder(config.encoder_config(toy_caption_vocabulary()))
    names = tuple(ATTRIBUTE_CLASSES)
    heads = torch.nn.ModuleDict({name: torch.nn.Linear(config.width, len(ATTRIBUTE_CLASSES[name])) for name in names})
    parameters = [*encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.01)
    world = ToyWorld(ToyWorldConfig(seed=TRAIN_WORLD_SEED))
    unknown_id = encoder.tokenizer.ids[UNK]
    started = time.perf_counter()
    encoder.train()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine_lr(step, config.learning_rate, config.steps, config.warmup_steps)
        indices = rng.integers(1_000_000, size=config.batch_size)
        scenes = [world.scene(int(i)) for i in indices]
        captions = [paraphrase_caption(s, rng) if rng.random() < 0.5 else canonical_caption(s) for s in scenes]
        token_ids, mask = encoder.tokenizer(captions)
        # <unk> drop-out on words only (not on <start>/<end>/padding).
        words = mask & (token_ids > unknown_id + 2)
        token_ids = torch.where(words & (torch.rand(token_ids.shape) < config.unknown_word_rate), unknown_id, token_ids)
        pooled = _pooled(encoder(token_ids, mask), mask)
        labels = label_tensor([scene_attributes(s) for s in scenes], names)
        loss = sum(torch.nn.functional.cross_entropy(heads[n](pooled), labels[n]) for n in names) / len(names)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if log is not None and (step + 1) % 250 == 0:
            log(f"text encoder step {step + 1}/{config.steps}  loss {loss.item():.4f}", flush=True)
    encoder.eval()
    record = {"training": asdict(config), "train_seconds": time.perf_counter() - started,
              "parameters": sum(p.numel() for p in encoder.parameters())}
    return encoder, record


def save_toy_text_encoder(encoder: WordTextEncoder, folder: Path, record: dict[str, Any]) -> None:
    save_component(folder, encoder, encoder.config.to_dict())
    write_json(Path(folder) / TRAINING_RECORD, {**record, "command": "python -m hummingbird_t2v.toyworld.components text-encoder"})


def load_toy_text_encoder(folder: Path = TOY_TEXT_ENCODER_DIR, *, device: torch.device | str = "cpu") -> WordTextEncoder:
    """The shipped toy text encoder (or one saved by `save_toy_text_encoder`)."""
    folder = Path(folder)
    read_json(folder / CONFIG_NAME)
    return load_component(folder, lambda data: WordTextEncoder(WordTextEncoderConfig.from_dict(data)), device=device)


# ---------------------------------------------------------------------------------------- CLI
def _run_vae(args: argparse.Namespace) -> int:
    config = ToyVAETraining(steps=args.steps, seed=args.seed, threads=args.threads, edge_weight=args.edge_weight)
    vae, report = train_toy_vae(config)
    save_toy_vae(vae, Path(args.out), config, report)
    print(
        f"saved {args.out}: {report.parameters / 1e6:.2f} M parameters, scaling factor {report.scaling_factor:.4f}, "
        f"trained {report.train_seconds / 60:.1f} min"
    )
    for kind, value in report.psnr.items():
        print(f"  held-out PSNR {kind:12s} {value:6.2f} dB")
    return 0


def _run_text_encoder(args: argparse.Namespace) -> int:
    encoder, record = train_word_text_encoder(WordEncoderTraining(steps=args.steps, seed=args.seed, threads=args.threads))
    save_toy_text_encoder(encoder, Path(args.out), record)
    print(f"saved {args.out}: {record['parameters'] / 1e6:.2f} M parameters, {len(encoder.config.vocabulary)} words, "
          f"trained {record['train_seconds'] / 60:.1f} min")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hummingbird_t2v.toyworld.components", description="Train the toy world's small components."
    )
    commands = parser.add_subparsers(dest="component", required=True)
    vae = commands.add_parser("vae", help="train the toy VAE and save it as a component folder")
    vae.add_argument("--out", default=str(TOY_VAE_DIR), help="output folder (default: the shipped asset)")
    vae.add_argument("--steps", type=int, default=ToyVAETraining.steps)
    vae.add_argument("--seed", type=int, default=0)
    vae.add_argument("--edge-weight", type=float, default=ToyVAETraining.edge_weight, help="weight of the L1 loss on pixel differences (default 0, as shipped)")
    vae.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    vae.set_defaults(func=_run_vae)
    text = commands.add_parser("text-encoder", help="train the toy word text encoder and save it as a component folder")
    text.add_argument("--out", default=str(TOY_TEXT_ENCODER_DIR), help="output folder (default: the shipped asset)")
    text.add_argument("--steps", type=int, default=WordEncoderTraining.steps)
    text.add_argument("--seed", type=int, default=0)
    text.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    text.set_defaults(func=_run_text_encoder)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
