"""How far the released fps quirk moves a teacher's guided prediction, per timestep.

The released stage 2 runs the teacher's unconditional pass without fps, so at the U-Net's default
(16), while the conditional pass gets the clip's fps (8). On a few toy clips and ten timesteps this
prints the guidance direction d = ε(c) − ε(∅) with consistent fps, the change q = ε(∅, fps 16) −
ε(∅, fps 8) the quirk makes to the unconditional prediction, and their size ratio |q| / |d| and
cosine. At any guidance scale g the quirk moves the CFG target ε(c) + (g − 1)·d by −(g − 1)·q, so
|q| / |d| is also its size against the target's guidance term:

    python scripts/fps_quirk_gap.py [--teacher src/hummingbird_t2v/assets/toy/model] [--clips 8]

A ratio near 0: the quirk hardly matters for that teacher; a ratio near 1 or above: the quirk's
target is a different guidance altogether.
"""

from __future__ import annotations

import argparse

import torch
from toy_probe_batch import add_probe_arguments, start_probe, toy_probe_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=int, default=8, help="the clips' fps, given to the conditional pass (default 8)")
    add_probe_arguments(parser)
    args = parser.parse_args()
    teacher = start_probe(args)
    default_fps = getattr(teacher.unet.config, "default_fps", None)
    batch = toy_probe_batch(teacher, args.clips, args.world_seed, args.vocabulary)
    n, config = args.clips, teacher.config
    with torch.no_grad():
        context, uncond = batch.context, batch.uncond
        fps = torch.full((n,), args.fps, dtype=torch.long)
        print(f"conditional pass at fps {args.fps}; quirk: unconditional pass at the U-Net default ({default_fps})")
        print("   t  |d| (rms)  |q| (rms)  |q|/|d|  cos(q, d)")
        for t in range(50, config.num_train_timesteps, config.num_train_timesteps // 10):
            timesteps = torch.full((n,), t, dtype=torch.long)
            z_t = batch.noised(t)
            uncond_same = teacher.unet(z_t, timesteps, uncond, fps=fps)
            direction = (teacher.unet(z_t, timesteps, context, fps=fps) - uncond_same).flatten()
            quirk = (teacher.unet(z_t, timesteps, uncond, fps=None) - uncond_same).flatten()
            cosine = float(quirk @ direction / (quirk.norm() * direction.norm()).clamp_min(1e-12))
            rms_d, rms_q = float(direction.pow(2).mean().sqrt()), float(quirk.pow(2).mean().sqrt())
            print(f"{t:4d}  {rms_d:9.5f}  {rms_q:9.5f}  {rms_q / rms_d:7.3f}  {cosine:9.3f}")


if __name__ == "__main__":
    main()
