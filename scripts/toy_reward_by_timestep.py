"""Where a reward can see its attribute: the toy reward of a model's one-step x̂₀, per timestep.

A reward term in training scores x̂₀ = (z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t decoded by the VAE. At low t that is
nearly the clip itself; at high t it is the model's blurry guess. This prints, on a few toy clips
and ten timesteps, the toy reward (log-probability of the captioned value by default) of the real
clips decoded from their latents, and of the x̂₀ of a model (with classifier-free guidance, as it
samples) and, optionally, of a stage-1 student (no CFG), so that `reward_timestep_range` can be set
where the reward is informative rather than where no model can satisfy it:

    python scripts/toy_reward_by_timestep.py [--teacher src/hummingbird_t2v/assets/toy/model] \\
        [--student runs/toy_student_stage1/model] [--attributes color] [--guidance 3] [--clips 8]
"""

from __future__ import annotations

import argparse

import torch
from toy_probe_batch import add_probe_arguments, start_probe, toy_probe_batch

from hummingbird_t2v.diffusion.consistency import predicted_original_sample
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.rewards.factory import build_reward_model
from hummingbird_t2v.training.objectives.reward_terms import decode_reward_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", help="a stage-1 student model folder to score as well (sampled without CFG)")
    parser.add_argument("--attributes", nargs="+", default=["color"], help="what the toy reward asks for (default color)")
    parser.add_argument("--mode", choices=["log_prob", "prob"], default="log_prob")
    parser.add_argument("--guidance", type=float, default=3.0, help="the teacher's CFG scale (default 3)")
    add_probe_arguments(parser)
    args = parser.parse_args()
    teacher = start_probe(args)
    student = HummingbirdPipeline.from_pretrained(args.student, device="cpu") if args.student else None
    batch = toy_probe_batch(teacher, args.clips, args.world_seed, args.vocabulary)
    reward = build_reward_model("toy", None, attributes=args.attributes, mode=args.mode).eval()
    n = args.clips
    fps = torch.full((n,), teacher.config.defaults.fps, dtype=torch.long)

    def score(latents: torch.Tensor) -> float:
        return float(reward.score(decode_reward_frames(teacher.vae, latents), batch.captions).mean())

    with torch.no_grad():
        print(f"toy reward ({args.mode} of {', '.join(args.attributes)}), mean over {n} clips; the real clips: {score(batch.latents):.3f}")
        print("   t  teacher x0 (CFG)" + ("  student x0" if student else ""))
        for t in range(50, teacher.config.num_train_timesteps, teacher.config.num_train_timesteps // 10):
            timesteps = torch.full((n,), t, dtype=torch.long)
            z_t = batch.noised(t)
            cond = teacher.unet(z_t, timesteps, batch.context, fps=fps)
            guided = cond + (args.guidance - 1) * (cond - teacher.unet(z_t, timesteps, batch.uncond, fps=fps))
            alpha = batch.alphas_cumprod[timesteps]
            row = f"{t:4d}  {score(predicted_original_sample(z_t, guided, alpha)):16.3f}"
            if student:
                eps = student.unet(z_t, timesteps, batch.context, fps=fps)
                row += f"  {score(predicted_original_sample(z_t, eps, alpha)):10.3f}"
            print(row)


if __name__ == "__main__":
    main()
