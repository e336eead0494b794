"""Shared by the teacher-probing scripts (stage1_guidance_fit.py, fps_quirk_gap.py): a batch of toy
clips encoded by a model's VAE and text encoder, and the noise schedule to noise them with."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from hummingbird_t2v.data.sampling import frames_to_tensor
from hummingbird_t2v.diffusion.schedule import scaled_linear_alphas_cumprod
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.toyworld.generator import ToyWorld, ToyWorldConfig
from hummingbird_t2v.toyworld.scene import resolve_vocabulary

BUILTIN = "src/hummingbird_t2v/assets/toy/model"


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """--teacher, --clips, --world-seed, --vocabulary, --threads."""
    parser.add_argument("--teacher", default=BUILTIN, help=f"teacher model folder (default {BUILTIN})")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--world-seed", type=int, default=7, help="toy world of the clips (default 7: no shipped component trained on it)")
    parser.add_argument("--vocabulary", default="core")
    parser.add_argument("--threads", type=int, default=None)


def start_probe(args: argparse.Namespace) -> HummingbirdPipeline:
    """Set the threads and the seed, and load the teacher."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return HummingbirdPipeline.from_pretrained(args.teacher, device="cpu")


@dataclass
class ProbeBatch:
    latents: torch.Tensor  # z0 of the clips
    context: torch.Tensor  # their captions, encoded
    uncond: torch.Tensor  # the empty prompt, encoded
    alphas_cumprod: torch.Tensor
    captions: list[str]  # the clips' captions

    def noised(self, t: int) -> torch.Tensor:
        """z_t at timestep t, with fresh noise from the global generator."""
        alpha = self.alphas_cumprod[t]
        return alpha.sqrt() * self.latents + (1 - alpha).sqrt() * torch.randn(self.latents.shape)


def toy_probe_batch(model: HummingbirdPipeline, clips: int, world_seed: int, vocabulary: str) -> ProbeBatch:
    defaults, config = model.config.defaults, model.config
    world = ToyWorld(ToyWorldConfig(seed=world_seed, num_frames=defaults.num_frames, height=defaults.height,
                                    width=defaults.width, vocabulary=resolve_vocabulary(vocabulary)))
    chosen = [world.clip(index) for index in range(clips)]
    with torch.no_grad():
        latents = model.vae.encode(torch.stack([frames_to_tensor(clip.frames) for clip in chosen]))
        context = model.encode_prompt([clip.caption for clip in chosen])
        uncond = model.encode_prompt([""] * clips)
    alphas_cumprod = scaled_linear_alphas_cumprod(config.num_train_timesteps, config.beta_start, config.beta_end).float()
    return ProbeBatch(latents, context, uncond, alphas_cumprod, [clip.caption for clip in chosen])
