"""`hummingbird generate`: prompts in, mp4 (or gif) files out."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hummingbird_t2v.commands.common import (
    add_device_arguments,
    resolve_device,
    resolve_dtype,
)
from hummingbird_t2v.errors import ConfigError

OUTPUT_SUFFIXES = (".mp4", ".gif")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate videos from text prompts",
        description="Generate one video per prompt and seed. Files are named after the prompt and the seed.",
    )
    parser.add_argument("prompt", nargs="?", help="the text prompt (or use --prompt-file)")
    parser.add_argument("--prompt-file", type=Path, help="a text file with one prompt per line")
    parser.add_argument("--weights", help="model folder, checkpoint file (.ckpt/.pt/.safetensors) or hub id (default: the built-in toy model)")
    parser.add_argument("--model", help="preset the weights must match: vc2, hb-0.9b, hb-0.7b (checked, optional)")
    parser.add_argument("--seed", type=int, nargs="+", default=[0], help="one video per seed (default: 0)")
    parser.add_argument("--steps", type=int, help="sampling steps (students: 4 or 8; teacher: 50)")
    parser.add_argument("--guidance-scale", type=float, help="guidance (students: distilled w, default 7.5; teacher: CFG, 12)")
    parser.add_argument("--frames", type=int, help="number of frames (default 16)")
    parser.add_argument("--fps", type=int, help="fps condition and output frame rate (students: 8; teacher: 28)")
    parser.add_argument("--height", type=int, help="height in pixels (default 320)")
    parser.add_argument("--width", type=int, help="width in pixels (default 512)")
    parser.add_argument("--negative-prompt", help="teacher only: replaces the empty unconditional prompt")
    parser.add_argument("--prior-strength", type=float,
                        help="models with a caption prior: how far the starting noise moves to the caption's mean clip (0: not at all; default: the model's, 1)")
    parser.add_argument("--gamma", type=float,
                        help="students: share of each step's noise drawn fresh (1: LCM, the default; 0: deterministic)")
    parser.add_argument("--decode-chunk-size", type=int, default=8, help="frames decoded at once by the VAE (memory bound)")
    parser.add_argument("--format", choices=("mp4", "gif"), default="mp4", help="file format when -o is a folder")
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs"), help="output folder, or a .mp4/.gif file for one video")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_arguments(parser)
    parser.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts: list[str] = []
    if args.prompt is not None:
        prompts.append(args.prompt)
    if args.prompt_file is not None:
        try:
            lines = args.prompt_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"cannot read the prompt file {args.prompt_file}: {error.strerror}") from None
        prompts.extend(line.strip() for line in lines if line.strip())
        if not prompts:
            raise ConfigError(f"the prompt file {args.prompt_file} has no prompts (one per line)")
    if not prompts:
        raise ConfigError('no prompt given: hummingbird generate "a red ball bouncing" (or --prompt-file FILE)')
    for prompt in prompts:
        if not prompt.strip():
            raise ConfigError('the prompt is empty; describe the video, e.g. hummingbird generate "a red ball bouncing"')
    return prompts


def plan_outputs(output: Path, prompts: list[str], seeds: list[int], file_format: str) -> list[tuple[str, int, Path]]:
    """(prompt, seed, path) for every video; checks the destination is writable before any work is done."""
    from hummingbird_t2v.pipelines.hummingbird import slugify

    jobs = [(prompt, seed) for prompt in prompts for seed in seeds]
    if output.suffix.lower() in OUTPUT_SUFFIXES:
        if len(jobs) > 1:
            raise ConfigError(f"{len(jobs)} videos requested but -o names one file ({output}); pass a folder instead")
        folder, paths = output.parent, [output]
    else:
        folder = output
        paths = [folder / f"{slugify(prompt)}_seed{seed}.{file_format}" for prompt, seed in jobs]
    ensure_writable(folder)
    return [(prompt, seed, path) for (prompt, seed), path in zip(jobs, paths)]


def ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to {folder}: {error.strerror}; choose another -o/--output") from None


def builtin_weights(model: str | None) -> str:
    """No --weights: the toy-world model that ships with the package (it knows only toy prompts)."""
    from hummingbird_t2v.toyworld.builtin import (
        builtin_model_folder,
        model_toy_vocabulary,
    )
    from hummingbird_t2v.toyworld.scene import describe_vocabulary

    folder = builtin_model_folder()
    if model is not None and Path(model).exists():
        raise ConfigError(f"--model takes a preset name (vc2, hb-0.9b, hb-0.7b); to load the model at {model}, pass --weights {model}")
    if folder is None or model is not None:
        raise ConfigError(
            "no --weights given: pass a model folder, a checkpoint file or a hub id, e.g. --weights 07B_merged_all.pt"
            + ("" if folder is None else " (the built-in toy model has no --model preset)")
        )
    print("using the built-in toy model (no --weights given); it was trained on the procedural toy world only.")
    print(describe_vocabulary(model_toy_vocabulary(folder)))
    return str(folder)


def run(args: argparse.Namespace) -> int:
    from hummingbird_t2v.pipelines.export import export_to_video
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline

    prompts = read_prompts(args)
    for name in ("frames", "steps", "height", "width", "fps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    if args.gamma is not None and not 0 <= args.gamma <= 1:
        raise ConfigError(f"--gamma must lie in [0, 1] (1: LCM sampling, 0: deterministic), got {args.gamma}")
    if args.decode_chunk_size < 1:
        raise ConfigError(f"--decode-chunk-size must be at least 1, got {args.decode_chunk_size}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    jobs = plan_outputs(args.output, prompts, args.seed, args.format)

    weights = args.weights or builtin_weights(args.model)
    print(f"loading {weights} on {device} ({str(dtype).removeprefix('torch.')})", flush=True)
    pipe = HummingbirdPipeline.from_pretrained(weights, torch_dtype=dtype, device=device, model=args.model)
    fps = args.fps or pipe.config.defaults.fps
    unknown_words = getattr(pipe.text_encoder, "unknown_words", None)  # word-level encoders (the toy model's)
    for prompt, seed, path in jobs:
        unknown = unknown_words(prompt) if unknown_words is not None else []
        if unknown:
            print(f"note: the model does not know the words {', '.join(repr(w) for w in unknown)}; it ignores them", flush=True)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        start = time.perf_counter()
        result = pipe(
            prompt,
            num_frames=args.frames,
            height=args.height,
            width=args.width,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            fps=fps,
            negative_prompt=args.negative_prompt,
            generator=generator,
            prior_strength=args.prior_strength,
            gamma=args.gamma,
            decode_chunk_size=args.decode_chunk_size,
            progress=not args.no_progress,
        )
        export_to_video(result.frames[0], path, fps)
        print(f"wrote {path} ({time.perf_counter() - start:.1f} s, seed {seed})", flush=True)
    return 0

