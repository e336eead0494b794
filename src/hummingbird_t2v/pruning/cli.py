"""`hummingbird prune`: build a pruned student from a teacher, or analyse which blocks matter.

    hummingbird prune --teacher vc2.ckpt --layout hb-0.9b -o hb09-init/
    hummingbird prune --teacher vc2.ckpt --layout my_layout.yaml -o student/
    hummingbird prune --analyze --teacher vc2.ckpt --budget-params 900M -o proposal.yaml
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hummingbird_t2v.errors import ConfigError

_DEFAULT_PROMPTS = (
    "a red ball bouncing on a wooden floor",
    "waves rolling onto a sandy beach at sunset",
    "a person walking a dog in a park",
    "time-lapse of clouds moving over mountains",
)
LAYOUT_FILE = "prune_layout.yaml"
_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9, "t": 1e12}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="prune a teacher U-Net into a student initialised from its weights, or rank its blocks",
        description="Build a pruned student U-Net whose weights are copied from the teacher through a layout "
        "(hb-0.9b, hb-0.7b or a LAYOUT.yaml), and report parameters and FLOPs before and after. With --analyze, "
        "measure how much each block matters on a calibration batch and propose a layout for a budget.",
    )
    parser.add_argument("--teacher", required=True, help="teacher checkpoint file, model folder, U-Net folder or hub id")
    parser.add_argument("--layout", help="hb-0.9b, hb-0.7b or a LAYOUT.yaml file (required unless --analyze)")
    parser.add_argument("-o", "--output", type=Path, help="student folder to write (with --analyze: the proposed LAYOUT.yaml)")
    parser.add_argument("--no-guidance-projection", action="store_true",
                        help="leave out the student's guidance projection (time_cond_proj); stage-1 students have none")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="dtype of the loaded and saved weights")
    parser.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised layers and of the calibration noise (default 0)")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text encoder, for widths not divisible by 64")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output")

    analysis = parser.add_argument_group("block-importance analysis (--analyze)")
    analysis.add_argument("--analyze", action="store_true", help="rank the teacher's blocks and propose a layout")
    budget = analysis.add_mutually_exclusive_group()
    budget.add_argument("--budget-params", help="largest student parameter count, e.g. 900M or 945209220")
    budget.add_argument("--budget-flops", help="largest student FLOPs per forward at 16x320x512, e.g. 8.2T")
    analysis.add_argument("--keep-middle", action="store_true", help="never propose dropping the middle block")
    analysis.add_argument("--guidance-scale", type=float, default=12.0, help="CFG scale of the measured prediction (default 12)")
    analysis.add_argument("--score", choices=("guided", "caption"), default="guided",
                          help="what a skipped block is scored on: the CFG-guided prediction (default), or only its "
                               "caption-dependent part eps(c) - eps(empty), to find the blocks that carry the prompt")
    analysis.add_argument("--calibration", type=Path,
                          help="safetensors file with 'latents' (clean, VAE-scaled, b x c x T x h x w), 'context' and "
                          "optionally 'uncond_context' and 'fps'; default: random latents and the prompts below")
    analysis.add_argument("--prompts", type=Path, help="text file, one calibration prompt per line (full models only)")
    analysis.add_argument("--calibration-samples", type=int, default=4, help="random calibration clips (default 4)")
    analysis.add_argument("--calibration-size", default="8x32x48",
                          help="frames x latent height x latent width of random calibration clips (default 8x32x48)")
    analysis.add_argument("--fps", type=int, default=8, help="fps condition of the calibration batch (default 8)")
    analysis.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (analysis only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.analyze:
        return _run_analysis(args)
    if not args.layout:
        raise ConfigError("pass --layout hb-0.9b, hb-0.7b or LAYOUT.yaml (or --analyze to propose one)")
    if args.output is None:
        raise ConfigError("pass -o/--output, the student folder to write")
    return _run_prune(args)


# --------------------------------------------------------------------------------------- prune


def _run_prune(args: argparse.Namespace) -> int:
    from hummingbird_t2v.commands.common import DTYPES
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.pruning.layouts import layout_yaml, load_layout
    from hummingbird_t2v.pruning.loading import load_model_or_unet
    from hummingbird_t2v.pruning.report import format_cost_table, unet_cost
    from hummingbird_t2v.pruning.transfer import prune_unet

    _check_output(args.output, args.overwrite)
    teacher = load_model_or_unet(args.teacher, dtype=DTYPES[args.dtype], text_num_heads=args.text_heads)
    teacher_config = teacher.unet.config
    layout = load_layout(args.layout, teacher_config)
    if args.no_guidance_projection:
        layout = layout.replace(time_cond_proj_dim=None)
    student = prune_unet(teacher.unet.state_dict(), teacher_config, layout, seed=args.seed, share_storage=True)

    print(f"teacher: {teacher.source} ({_structure(teacher_config)})")
    print(f"layout {layout.name or args.layout}: {layout.describe(teacher_config)}")
    print(format_cost_table([("teacher", unet_cost(teacher_config)), ("student", unet_cost(student.unet.config))]))
    copied = len(student.sources) - len(student.fresh_keys)
    fresh = ", ".join(student.fresh_keys) or "none"
    print(f"copied {copied} tensors from the teacher; freshly initialised: {fresh}")

    layout_text = layout_yaml(layout, teacher_config)
    if teacher.pipeline is not None:
        # The teacher's sampler settings (frame count, size, steps) suit a student that keeps its
        # sampler; one given a guidance projection is meant for the consistency sampler instead.
        settings = None if student.unet.config.time_cond_proj_dim else teacher.pipeline.config
        pipe = HummingbirdPipeline(
            student.unet, teacher.pipeline.vae, teacher.pipeline.text_encoder, settings, prior=teacher.pipeline.prior
        )
        folder = pipe.save_pretrained(args.output, overwrite=args.overwrite)
        _write_text(folder / LAYOUT_FILE, layout_text)
        kind = f"model folder, sampler {pipe.config.sampler}"
    else:
        folder = _write_unet_folder(args.output, student.unet, layout_text)
        kind = "U-Net folder"
    print(f"wrote {folder} ({kind})")
    return 0


def _write_unet_folder(output: Path, unet: Any, layout_text: str) -> Path:
    """config.json + model.safetensors (+ the layout), staged next to `output` and moved into place."""
    from hummingbird_t2v.checkpoints.folder import default_permissions, save_component

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        save_component(staging, unet, unet.config.to_dict())
        _write_text(staging / LAYOUT_FILE, layout_text)
        default_permissions(staging)
        if output.exists():
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary name in the same folder, then rename (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise ConfigError(f"{output} already exists; choose a new path or pass --overwrite")


def _structure(config: Any) -> str:
    from hummingbird_t2v.checkpoints.unet_keys import (
        expected_unet_shapes,
        match_unet_preset,
    )

    preset = match_unet_preset(expected_unet_shapes(config))
    blocks = "/".join(str(n) for n in config.blocks_per_level)
    middle = "with" if config.use_middle_block else "without"
    return f"{preset or 'custom'} structure, {blocks} blocks per level, {middle} middle block"


# --------------------------------------------------------------------------------------- analyze


def _run_analysis(args: argparse.Namespace) -> int:
    from hummingbird_t2v.commands.common import DTYPES, resolve_device
    from hummingbird_t2v.pruning.importance import (
        Budget,
        measure_layout,
        propose_layout,
        score_blocks,
    )
    from hummingbird_t2v.pruning.layouts import (
        PAPER_LAYOUT_NAMES,
        RELEASED_GUIDANCE_PROJECTION,
        LayoutError,
        layout_yaml,
        paper_layout,
    )
    from hummingbird_t2v.pruning.loading import load_model_or_unet
    from hummingbird_t2v.pruning.report import block_costs, format_cost_table, unet_cost

    if args.layout:
        raise ConfigError("--analyze proposes a layout; leave out --layout (prune with the proposal afterwards)")
    if args.output is not None:
        _check_output(args.output, args.overwrite)
    device = resolve_device(args.device)
    budget = None
    if args.budget_params:
        budget = Budget("params", parse_count(args.budget_params))
    elif args.budget_flops:
        budget = Budget("flops", parse_count(args.budget_flops))
    calibration_size = _parse_size(args.calibration_size)
    teacher = load_model_or_unet(args.teacher, dtype=DTYPES[args.dtype], text_num_heads=args.text_heads)
    config = teacher.unet.config
    projection = None if args.no_guidance_projection else RELEASED_GUIDANCE_PROJECTION
    batch = _calibration_batch(args, teacher, config, calibration_size)

    costs = block_costs(config)
    budget_origin = "given"
    if budget is None:
        # Default: the size of the paper's "halve the blocks" student (one block per level, middle kept).
        halved = unet_cost(config.replace(num_res_blocks=1, time_cond_proj_dim=projection))
        budget = Budget("params", halved.params)
        budget_origin = "default: one block per level with the middle block"

    teacher.unet.to(device)
    print(f"teacher: {teacher.source} ({_structure(config)}); calibration: {tuple(batch.noisy_latents.shape)} at t={batch.timesteps.tolist()}")
    scores = score_blocks(teacher.unet, batch, costs, guidance_scale=args.guidance_scale, target=args.score)
    print(_ranking_table(scores))

    proposal = propose_layout(config, scores, costs.total, budget, time_cond_proj_dim=projection, allow_dropping_middle=not args.keep_middle)
    measured = measure_layout(teacher.unet, proposal.layout, batch, guidance_scale=args.guidance_scale, target=args.score)
    rows = [("teacher", costs.total), ("proposal", proposal.cost)]
    comparison: dict[str, float] = {}
    for name in PAPER_LAYOUT_NAMES:
        try:
            reference = paper_layout(name, config).replace(time_cond_proj_dim=projection)
        except LayoutError:
            break  # not a VideoCrafter2-structured teacher: no paper map to compare with
        rows.append((f"paper {name}", unet_cost(reference.student_config(config))))
        comparison[name] = measure_layout(teacher.unet, reference, batch, guidance_scale=args.guidance_scale, target=args.score)

    print(f"\nbudget: {budget.metric} <= {budget.limit:,} ({budget_origin})")
    print(f"proposal: {proposal.layout.describe(config)}")
    print(f"left out: {', '.join(proposal.removed) or 'nothing'} (summed score {proposal.removed_score:.4g})")
    print(format_cost_table(rows))
    measured_what = "guided prediction" if args.score == "guided" else "caption's part eps(c) - eps(empty)"
    print(f"relative change of the {measured_what}, weights copied without training: proposal {measured:.4g}"
          + "".join(f", paper {name} {value:.4g}" for name, value in comparison.items()))

    analysis = {
        "teacher": str(teacher.source),
        "budget": {budget.metric: budget.limit},
        "guidance_scale": args.guidance_scale,
        "score": args.score,
        "calibration_shape": list(batch.noisy_latents.shape),
        "predicted": {"params": proposal.cost.params, "flops": proposal.cost.flops},
        "measured_change": round(measured, 6),
        "paper_layout_change": {name: round(value, 6) for name, value in comparison.items()},
        "ranking": [
            {"block": s.block.name, "score": None if s.score is None else round(s.score, 6), "params": s.cost.params, "flops": s.cost.flops}
            for s in scores
        ],
    }
    text = layout_yaml(proposal.layout, config, analysis)
    if args.output is None:
        print("\n" + text)
    else:
        _write_text(args.output, text)
        print(f"wrote {args.output} (use it with --layout)")
    return 0


def _ranking_table(scores: list[Any]) -> str:
    lines = [f"{'rank':>4}  {'block':<18}{'where':<24}{'change if skipped':>18}{'parameters':>14}{'GFLOPs':>10}"]
    for rank, s in enumerate(scores, 1):
        b = s.block
        where = "middle" if b.part == "middle" else f"level {b.level} {b.part} #{b.position}"
        score = f"{s.score:.4g}" if s.score is not None else f"required ({b.reason})"
        lines.append(f"{rank:>4}  {b.name:<18}{where:<24}{score:>18}{s.cost.params:>14,}{s.cost.flops / 1e9:>10,.1f}")
    return "\n".join(lines)


def _calibration_batch(args: argparse.Namespace, teacher: Any, config: Any, size: tuple[int, int, int]) -> Any:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hummingbird_t2v.errors import CheckpointError
    from hummingbird_t2v.pruning.importance import make_calibration_batch

    generator = torch.Generator().manual_seed(args.seed)
    if args.calibration is not None:
        try:
            data = load_file(str(args.calibration))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{args.calibration} is not a readable safetensors file ({error})") from None
        if "latents" not in data or "context" not in data:
            raise ConfigError(f"{args.calibration} must hold 'latents' and 'context' (and optionally 'uncond_context', 'fps')")
        latents, context = data["latents"], data["context"]
        uncond = data.get("uncond_context")
        if uncond is None:
            uncond = _encode(teacher, [""]) if teacher.pipeline is not None else None
        if uncond is None:
            raise ConfigError(f"{args.calibration} has no 'uncond_context' and the teacher has no text encoder to embed \"\"")
        fps = data.get("fps", args.fps)
    else:
        frames, height, width = size
        if args.calibration_samples < 1:
            raise ConfigError(f"--calibration-samples must be at least 1, got {args.calibration_samples}")
        samples = args.calibration_samples
        latents = torch.randn(samples, config.in_channels, frames, height, width, generator=generator)
        if teacher.pipeline is not None:
            prompts = _read_prompts(args.prompts) if args.prompts else list(_DEFAULT_PROMPTS)
            context = _encode(teacher, [prompts[i % len(prompts)] for i in range(samples)])
            uncond = _encode(teacher, [""])
        else:
            if args.prompts:
                raise ConfigError("--prompts needs a full model (with a text encoder); this teacher is a bare U-Net")
            # A bare U-Net has no text encoder: random token embeddings stand in for captions.
            context = torch.randn(samples, 77, config.context_dim, generator=generator)
            uncond = torch.randn(1, 77, config.context_dim, generator=generator)
        fps = args.fps
    factor = 2 ** (len(config.channel_mult) - 1)
    if latents.ndim != 5 or latents.shape[3] % factor or latents.shape[4] % factor:
        raise ConfigError(f"calibration latents must be (b, c, frames, h, w) with h and w multiples of {factor}, got {tuple(latents.shape)}")
    # Noise the latents the way the teacher was trained: VideoCrafter2 with its dynamic latent rescale, a
    # full model as its pipeline config says (the toy models trained without it).
    latent_rescale = teacher.pipeline.config.use_scale if teacher.pipeline is not None else True
    return make_calibration_batch(latents, context, uncond, fps=fps, seed=args.seed, latent_rescale=latent_rescale)


def _encode(teacher: Any, prompts: list[str]) -> Any:
    import torch

    with torch.no_grad():
        return teacher.pipeline.text_encoder.encode(prompts).float()


def _read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt file {path} has no prompts (one per line)")
    return prompts


def _parse_size(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match or any(int(v) < 1 for v in match.groups()):
        raise ConfigError(f"--calibration-size must look like FRAMESxHEIGHTxWIDTH in latent pixels, e.g. 8x32x48; got {text!r}")
    frames, height, width = (int(v) for v in match.groups())
    return frames, height, width


def parse_count(text: str) -> int:
    """'945209220', '945,209,220', '945M', '0.9B', '8.2T', '1e9' -> int."""
    cleaned = text.strip().replace(",", "").replace("_", "").lower()
    multiplier = 1.0
    if cleaned and cleaned[-1] in _SUFFIXES:
        multiplier = _SUFFIXES[cleaned[-1]]
        cleaned = cleaned[:-1]
    try:
        value = float(cleaned) * multiplier
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a count; write e.g. 945209220, 900M, 0.9B or 8.2T") from None
    if value <= 0:
        raise ConfigError(f"a budget must be positive, got {text!r}")
    return round(value)
