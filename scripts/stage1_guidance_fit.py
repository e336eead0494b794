"""How much of the teacher's guidance a stage-1 student has learned, per timestep.

Stage 1 trains the student on the guided target ε(∅) + g·(ε(c) − ε(∅)). On a few toy clips and
ten timesteps this prints the student's mean squared error to that target, the size of the
guidance step (target minus the teacher's conditional prediction ε(c)), the share `alpha` of that
step the student covers (its prediction minus ε(c), projected on the step), and the squared
error left off the step's direction:

    python scripts/stage1_guidance_fit.py --student runs/toy_student_stage1/model \\
        [--teacher src/hummingbird_t2v/assets/toy/model] [--guidance 3] [--clips 8] [--world-seed 7]

alpha near 1 with a small off-direction error: the student reproduces the guided teacher; alpha
well below 1: it samples as if with weaker guidance.
"""

from __future__ import annotations

import argparse

import torch
from toy_probe_batch import add_probe_arguments, start_probe, toy_probe_batch

from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="stage-1 student model folder")
    parser.add_argument("--guidance", type=float, default=3.0, help="the guidance scale stage 1 distilled (default 3)")
    add_probe_arguments(parser)
    args = parser.parse_args()
    teacher = start_probe(args)
    student = HummingbirdPipeline.from_pretrained(args.student, device="cpu")
    batch = toy_probe_batch(teacher, args.clips, args.world_seed, args.vocabulary)
    n, config = args.clips, teacher.config
    with torch.no_grad():
        context, uncond = batch.context, batch.uncond
        fps = torch.full((n,), config.defaults.fps, dtype=torch.long)
        print("   t  student-target MSE  guidance step MSE  alpha  off-direction MSE")
        for t in range(50, config.num_train_timesteps, config.num_train_timesteps // 10):
            timesteps = torch.full((n,), t, dtype=torch.long)
            z_t = batch.noised(t)
            cond = teacher.unet(z_t, timesteps, context, fps=fps)
            target = cond + (args.guidance - 1) * (cond - teacher.unet(z_t, timesteps, uncond, fps=fps))
            predicted = student.unet(z_t, timesteps, context, fps=fps)
            step, moved = (target - cond).flatten(), (predicted - cond).flatten()
            alpha = float(moved @ step / (step @ step))
            off = float(((moved - alpha * step) ** 2).mean())
            print(f"{t:4d}  {float(((predicted - target) ** 2).mean()):18.5f}  {float((step ** 2).mean()):17.5f}  {alpha:5.3f}  {off:17.5f}")


if __name__ == "__main__":
    main()
