"""Toy-scale cost of the recipe's models: the toy teacher against its pruned students, on this machine.

For each U-Net (the toy teacher of configs/toy_teacher.yaml, the student of a pruning layout, the
same student with the guidance projection that stage 2 adds): parameters, FLOPs of one forward at
the toy size (8 frames, 16x16 latents, counted on the meta device), and the measured latency of one
U-Net forward (one sampling step of a student; a teacher CFG step is two). Then, in the same run,
the end-to-end time of one video (text encoding, sampling, VAE decode, the shipped toy VAE and text
encoder): teacher DDIM-50 with CFG against the 4- and 8-step consistency student. Random U-Net
weights: speed does not depend on the values.

    python benchmarks/toy_speed.py [--layout configs/toy_paper_layout.yaml] [--threads 2] [--dtype bf16] [--json out.json]

With --teacher-model and --student-model (trained model folders, e.g. the toy recipe's teacher and
its stage-2 student), the same measurements use those models instead of random U-Nets. --dtype bf16
runs every model in bfloat16 (what `hummingbird generate --dtype bf16` does; worth it on CPUs with
AVX-512 BF16 or AMX).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from hummingbird_t2v.models.unet import UNet3D, count_parameters
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.pipelines.config import PipelineConfig, SamplingDefaults
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
from hummingbird_t2v.pruning.layouts import load_layout
from hummingbird_t2v.toyworld.components import load_toy_vae
from hummingbird_t2v.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
FRAMES, LATENT, CONTEXT_TOKENS = 8, 16, 40
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROMPT = "a red circle moving left on a blue background"


def toy_teacher_config() -> UNetConfig:
    spec = load_config(REPO / "configs" / "toy_teacher.yaml").model.unet
    return UNetConfig.from_dict({**get_unet_preset(spec.preset).to_dict(), **spec.config})


def forward_inputs(config: UNetConfig, device: str | None = None) -> tuple:
    kwargs = {"device": device} if device else {}
    x = torch.randn(1, config.in_channels, FRAMES, LATENT, LATENT, **kwargs)
    t = torch.full((1,), 500, dtype=torch.long, **kwargs)
    context = torch.randn(1, CONTEXT_TOKENS, config.context_dim, **kwargs)
    cond = torch.randn(1, config.time_cond_proj_dim, **kwargs) if config.time_cond_proj_dim else None
    return x, t, context, cond


def forward_flops(config: UNetConfig) -> int:
    with torch.device("meta"):
        unet = UNet3D(config).eval()
        x, t, context, cond = forward_inputs(config, "meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            unet(x, t, context, fps=8, timestep_cond=cond)
    return counter.get_total_flops()


@torch.no_grad()
def step_latency(unet: UNet3D, repeats: int) -> float:
    """Median seconds of one forward at batch 1, after two warm-up runs."""
    x, t, context, cond = forward_inputs(unet.config)
    times = []
    for index in range(repeats + 2):
        start = time.perf_counter()
        unet(x, t, context, fps=8, timestep_cond=cond)
        if index >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def video_latency(pipe: HummingbirdPipeline, steps: int, guidance: float, repeats: int) -> float:
    """Median seconds for one video end to end, after one warm-up run."""
    times = []
    for index in range(repeats + 1):
        start = time.perf_counter()
        pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0), progress=False)
        if index >= 1:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_weight_pipelines(teacher: UNet3D, student: UNet3D) -> tuple[HummingbirdPipeline, HummingbirdPipeline]:
    """The teacher (DDIM) and stage-2 student (consistency) pipelines around random U-Nets, with the
    shipped toy VAE and word text encoder."""
    from hummingbird_t2v.toyworld.components import TOY_TEXT_ENCODER_DIR
    from hummingbird_t2v.training.components import build_from_spec
    from hummingbird_t2v.training.config import ComponentSpec

    text_encoder = build_from_spec(ComponentSpec(path=str(TOY_TEXT_ENCODER_DIR), class_name="WordTextEncoder"), "text_encoder")
    vae = load_toy_vae()
    defaults = SamplingDefaults(num_inference_steps=50, guidance_scale=7.5, fps=8, num_frames=FRAMES, height=4 * LATENT, width=4 * LATENT)
    return (HummingbirdPipeline(teacher, vae, text_encoder, PipelineConfig(sampler="ddim", defaults=defaults)),
            HummingbirdPipeline(student, vae, text_encoder, PipelineConfig(sampler="consistency", defaults=defaults)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default=str(REPO / "configs" / "toy_paper_layout.yaml"), help="student layout (default: the paper map)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per U-Net forward (videos: a third of it, at least 1)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="precision of every model (default fp32)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--teacher-model", help="a trained teacher model folder (with --student-model): time it instead of a random U-Net")
    parser.add_argument("--student-model", help="a trained stage-2 student model folder (with --teacher-model)")
    args = parser.parse_args()
    if bool(args.teacher_model) != bool(args.student_model):
        parser.error("give both --teacher-model and --student-model, or neither")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]

    if args.teacher_model:
        teacher_pipe = HummingbirdPipeline.from_pretrained(args.teacher_model, device="cpu", torch_dtype=dtype)
        student_pipe = HummingbirdPipeline.from_pretrained(args.student_model, device="cpu", torch_dtype=dtype)
        unets = {"teacher": teacher_pipe.unet.eval(), "student (stage 2)": student_pipe.unet.eval()}
    else:
        teacher = toy_teacher_config()
        student = load_layout(args.layout, teacher).student_config(teacher).replace(time_cond_proj_dim=None)
        configs = {"teacher": teacher, "student (stage 1)": student,
                   "student (stage 2, + guidance projection)": student.replace(time_cond_proj_dim=256)}
        unets = {name: UNet3D(config).eval() for name, config in configs.items()}
        teacher_pipe, student_pipe = random_weight_pipelines(unets["teacher"], unets["student (stage 2, + guidance projection)"])
        teacher_pipe, student_pipe = teacher_pipe.to(dtype=dtype), student_pipe.to(dtype=dtype)
        unets = {name: unet.to(dtype) for name, unet in unets.items()}
    rows = {}
    print(f"U-Nets at the toy size ({FRAMES} frames, {LATENT}x{LATENT} latents, batch 1), {args.dtype}, {args.threads} CPU threads:")
    print(f"  {'U-Net':44s} {'parameters':>12s} {'GFLOP/forward':>14s} {'ms/forward':>11s}")
    for name, unet in unets.items():
        rows[name] = {"parameters": count_parameters(unet), "flops": forward_flops(unet.config), "seconds_per_forward": step_latency(unet, args.repeats)}
        row = rows[name]
        print(f"  {name:44s} {row['parameters']:>12,} {row['flops'] / 1e9:>14.2f} {1000 * row['seconds_per_forward']:>11.1f}")

    video_repeats = max(1, args.repeats // 3)
    videos = {
        "teacher, DDIM 50 x CFG 7.5": video_latency(teacher_pipe, 50, 7.5, video_repeats),
        "student, 8 consistency steps": video_latency(student_pipe, 8, 7.5, video_repeats),
        "student, 4 consistency steps": video_latency(student_pipe, 4, 7.5, video_repeats),
    }
    print(f"\nOne video end to end ({FRAMES} frames of {4 * LATENT}x{4 * LATENT}; text encoder, sampling, VAE decode), "
          f"median of {video_repeats}:")
    for name, seconds in videos.items():
        print(f"  {name:32s} {seconds:8.3f} s")
    base = videos["teacher, DDIM 50 x CFG 7.5"]
    speedups = {name: base / seconds for name, seconds in videos.items() if name.startswith("student")}
    for name, ratio in speedups.items():
        print(f"  speed-up of the {name.removeprefix('student, ')}: {ratio:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "dtype": args.dtype, "unets": rows, "videos": videos, "speedups": speedups}, indent=2))


if __name__ == "__main__":
    main()
