"""Teacher (VideoCrafter2 structure, DDIM-50 + CFG) against student (hb-0.7b structure, 4 steps).

Two measurements in one run, both with random weights (speed does not depend on the values):
1. FLOPs of both pipelines at the official size (16 x 320 x 512), counted on the meta device with
   torch.utils.flop_counter (matmul/conv/attention as 2*MAC), U-Net only and with the VAE decode.
2. End-to-end latency (text encode + sampling + VAE decode) of both at a size that runs on a small CPU.

    python benchmarks/speed.py                       # CPU defaults: 8 frames, 64 x 64
    python benchmarks/speed.py --device cuda --dtype bf16 --frames 16 --height 320 --width 512
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from hummingbird_t2v.models.text_encoder import OpenCLIPTextEncoder, TextEncoderConfig
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import get_unet_preset
from hummingbird_t2v.models.vae import VAEConfig, VideoVAE
from hummingbird_t2v.pipelines.config import PipelineConfig
from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline

TEACHER, STUDENT = "vc2", "hb-0.7b"
OFFICIAL_FRAMES, OFFICIAL_LATENT = 16, (40, 64)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def unet_forward_flops(preset: str) -> int:
    with torch.device("meta"):
        unet = UNet3D(get_unet_preset(preset)).eval()
        x = torch.empty(1, 4, OFFICIAL_FRAMES, *OFFICIAL_LATENT)
        t = torch.full((1,), 999, dtype=torch.long)
        context = torch.empty(1, 77, unet.config.context_dim)
        cond = torch.empty(1, unet.config.time_cond_proj_dim) if unet.config.time_cond_proj_dim else None
        with torch.no_grad():
            return count_flops(lambda: unet(x, t, context, fps=8, timestep_cond=cond))


def vae_decode_flops() -> int:
    with torch.device("meta"):
        vae = VideoVAE(VAEConfig.preset("sd")).eval()
        z = torch.empty(1, 4, OFFICIAL_FRAMES, *OFFICIAL_LATENT)
        with torch.no_grad():
            return count_flops(lambda: vae.decode(z, chunk_size=OFFICIAL_FRAMES))


@dataclass
class FlopReport:
    teacher_unet: int
    student_unet: int
    vae_decode: int
    teacher_steps: int
    student_steps: int

    @property
    def teacher_total(self) -> int:  # two U-Net passes per DDIM step (CFG)
        return 2 * self.teacher_steps * self.teacher_unet

    @property
    def student_total(self) -> int:
        return self.student_steps * self.student_unet

    def rows(self) -> list[tuple[str, float, float, float]]:
        tera = 1e12
        return [
            ("U-Net only", self.teacher_total / tera, self.student_total / tera, self.teacher_total / self.student_total),
            (
                "with VAE decode",
                (self.teacher_total + self.vae_decode) / tera,
                (self.student_total + self.vae_decode) / tera,
                (self.teacher_total + self.vae_decode) / (self.student_total + self.vae_decode),
            ),
        ]


def build_pipeline(preset: str, device: torch.device, dtype: torch.dtype) -> HummingbirdPipeline:
    torch.manual_seed(0)
    unet = UNet3D(get_unet_preset(preset))
    vae = VideoVAE(VAEConfig.preset("sd"))
    text_encoder = OpenCLIPTextEncoder(TextEncoderConfig.preset("vit-h-14"))
    sampler = "consistency" if unet.config.time_cond_proj_dim else "ddim"
    pipe = HummingbirdPipeline(unet, vae, text_encoder, PipelineConfig.for_sampler(sampler))
    return pipe.to(device=device, dtype=dtype)


def time_pipeline(pipe: HummingbirdPipeline, args: argparse.Namespace, steps: int, repeats: int) -> float:
    """Best of `repeats` end-to-end runs (seconds per video), after one untimed warm-up on the GPU."""

    def once() -> float:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        pipe("a cute raccoon playing guitar on the beach", num_frames=args.frames, height=args.height, width=args.width,
             num_inference_steps=steps, generator=torch.Generator().manual_seed(0), progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if args.device.startswith("cuda"):
        once()
    return min(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--student-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--flops-only", action="store_true")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    flops = FlopReport(unet_forward_flops(TEACHER), unet_forward_flops(STUDENT), vae_decode_flops(),
                       args.teacher_steps, args.student_steps)
    print(f"FLOPs at the official size ({OFFICIAL_FRAMES} x 320 x 512), batch 1:")
    print(f"  one U-Net forward: {TEACHER} {flops.teacher_unet / 1e12:.3f} TFLOP, {STUDENT} {flops.student_unet / 1e12:.3f} TFLOP;"
          f" VAE decode {flops.vae_decode / 1e12:.3f} TFLOP")
    print(f"  {'':18s} {'teacher (DDIM-%d x CFG)' % args.teacher_steps:>24s} {'student (%d steps)' % args.student_steps:>20s} {'ratio':>8s}")
    for name, teacher, student, ratio in flops.rows():
        print(f"  {name:18s} {teacher:20.2f} TFLOP {student:14.2f} TFLOP {ratio:7.1f}x")
    results = {"flops": {name: {"teacher_tflop": t, "student_tflop": s, "ratio": r} for name, t, s, r in flops.rows()}}

    if not args.flops_only:
        from hummingbird_t2v.commands.common import DTYPES

        device, dtype = torch.device(args.device), DTYPES[args.dtype]
        torch.set_grad_enabled(False)
        print(f"\nEnd-to-end latency on {args.device} ({args.dtype}, {torch.get_num_threads()} threads), "
              f"{args.frames} frames x {args.height} x {args.width}, random weights:")
        latency = {}
        for preset, steps in ((STUDENT, args.student_steps), (TEACHER, args.teacher_steps)):
            pipe = build_pipeline(preset, device, dtype)
            latency[preset] = time_pipeline(pipe, args, steps, args.repeats)
            print(f"  {preset:8s} {steps:3d} steps: {latency[preset]:8.2f} s per video", flush=True)
            del pipe
        speedup = latency[TEACHER] / latency[STUDENT]
        print(f"  measured speed-up {TEACHER} / {STUDENT}: {speedup:.1f}x (paper: 31x on a GPU)")
        results["latency"] = {"device": args.device, "dtype": args.dtype, "frames": args.frames, "height": args.height,
                              "width": args.width, "seconds": latency, "speedup": speedup}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
