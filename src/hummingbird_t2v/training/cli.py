"""`hummingbird train ...`: one sub-command per registered objective, plus `export`.

    hummingbird train base --config configs/toy_teacher.yaml [--set optim.lr=1e-4 ...] [--resume] [--output DIR]
    hummingbird train distill --config configs/toy_distill.yaml            # stage 1
    hummingbird train consistency --config configs/toy_consistency.yaml    # stage 2
    hummingbird train export --run DIR [--checkpoint DIR] [-o OUT]
    hummingbird train merge-lora --run DIR | --checkpoint DIR -o OUT
    hummingbird train prior --model DIR --config configs/toy_teacher_core.yaml -o OUT   # caption prior

Objectives bring their own sub-command (`ObjectiveSpec.command`, see training.objectives).
Multi-process runs use the same command under a launcher:

    torchrun --nproc_per_node 4 -m hummingbird_t2v.cli train base --config ...
    accelerate launch -m hummingbird_t2v.cli train base --config ...
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from hummingbird_t2v.errors import ConfigError

__all__ = ["add_parser"]


def _add_overrides_argument(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help=f"override a config value (repeatable), {example}",
    )


def _add_objective_command(subparsers: Any, spec: Any) -> None:
    parser = subparsers.add_parser(
        spec.command,
        help=spec.description or f"train with the {spec.name!r} objective",
        description=f"{spec.description}. Config: a YAML file (see docs/training.md); objective.name must be {spec.name!r}.",
    )
    parser.add_argument(
        "--config",
        required=True,
        help="YAML training config, e.g. configs/toy_teacher.yaml",
    )
    _add_overrides_argument(parser, "e.g. --set optim.lr=1e-4 --set run.max_steps=2000")
    parser.add_argument(
        "--output",
        help="run folder (checkpoints, logs, samples, model); overrides output_dir",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in the run folder (starts fresh when there is none)",
    )
    parser.set_defaults(func=_run_training, objective_name=spec.name)


def _run_training(args: argparse.Namespace) -> int:
    from hummingbird_t2v.training.config import (
        apply_overrides,
        config_from_dict,
        read_yaml,
    )
    from hummingbird_t2v.training.loop import Trainer

    raw = apply_overrides(read_yaml(args.config), args.overrides)
    objective = raw.setdefault("objective", {})
    if not isinstance(objective, dict):
        raise ConfigError("the config's objective section must be a mapping with a 'name'")
    named = objective.setdefault("name", args.objective_name)
    if named != args.objective_name:
        raise ConfigError(
            f"{args.config} trains objective {named!r}, but this command trains {args.objective_name!r}; "
            "use the matching `hummingbird train` sub-command"
        )
    if args.output:
        raw["output_dir"] = args.output
    config = config_from_dict(raw)
    _configure_logging()
    trainer = Trainer(config, resume=args.resume)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if result.model_dir is not None:
        print(f"trained {result.step} steps; model folder: {result.model_dir}")
        prompt = config.sample.prompts[0] if config.sample.prompts else "PROMPT"
        print(f'try it: hummingbird generate "{prompt}" --weights {result.model_dir}')
    return 0


def _add_export_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a model folder from a run's checkpoint (EMA weights) without training",
        description="Export the EMA U-Net of a checkpoint, with the run's VAE and text encoder, as a model folder.",
    )
    parser.add_argument(
        "--run",
        required=True,
        help="the run folder (holds config.yaml and checkpoints/)",
    )
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: the run's newest)")
    parser.add_argument("-o", "--output", help="where to write the model folder (default: <run>/model)")
    parser.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from hummingbird_t2v.training.loop import export_run

    _configure_logging()
    folder = export_run(args.run, checkpoint=args.checkpoint, output=args.output)
    print(f"model folder: {folder}")
    return 0


def _add_merge_lora_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "merge-lora",
        help="merge a stage-2 run's LoRA weights into a plain U-Net folder",
        description="Fold the LoRA weights of a `train consistency` checkpoint into the student's weights and write "
        "a U-Net component folder (config.json + model.safetensors), usable as model.unet.path or as a model "
        "folder's unet/. The LoRA scale and the U-Net config come from the run's config.yaml. "
        "`train export` writes a whole model folder (with the merged U-Net) instead.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run folder (its newest checkpoint is merged)")
    source.add_argument("--checkpoint", help="a checkpoint folder, e.g. RUN/checkpoints/step-00001000")
    parser.add_argument("-o", "--output", required=True, help="the U-Net folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(func=_run_merge_lora)


def _run_merge_lora(args: argparse.Namespace) -> int:
    from hummingbird_t2v.training.lora import merge_and_save

    source = Path(args.run or args.checkpoint).expanduser()
    run_dir = source if args.run else source.parent.parent  # RUN/checkpoints/step-N
    alpha, config = _lora_settings_of_run(run_dir)
    folder = merge_and_save(source, args.output, alpha=alpha, config=config, overwrite=args.overwrite)
    print(f"merged U-Net folder: {folder}")
    return 0


def _lora_settings_of_run(run_dir: Path) -> tuple[float | None, Any]:
    """(LoRA alpha, the student's UNetConfig or None) from a stage-2 run's config.yaml."""
    from hummingbird_t2v.training.components import unet_config_of_spec
    from hummingbird_t2v.training.config import load_config
    from hummingbird_t2v.training.loop import CONFIG_FILE
    from hummingbird_t2v.training.objectives import parse_objective_settings
    from hummingbird_t2v.training.objectives.consistency import (
        ConsistencySettings,
        consistency_student_config,
    )

    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        logging.getLogger(__name__).warning(
            "%s not found: merging with LoRA scale 1.0 and a U-Net config inferred from the weights", config_file
        )
        return None, None
    config = load_config(config_file)
    _, settings = parse_objective_settings(config.objective)
    if not isinstance(settings, ConsistencySettings):
        raise ConfigError(
            f"{run_dir} trained objective {config.objective['name']!r}, which has no LoRA weights; "
            "use `hummingbird train export` for its model folder"
        )
    if settings.trainable != "lora":
        raise ConfigError(
            f"{run_dir} fine-tuned the whole student (objective.trainable: {settings.trainable}); there is no LoRA "
            "to merge: use `hummingbird train export` for its model folder"
        )
    return settings.lora.alpha, consistency_student_config(settings, unet_config_of_spec(config.model.unet))


def _add_prior_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prior",
        help="add a caption prior (the caption's mean latent clip, where sampling starts) to a model folder",
        description="Fit a CaptionMeanPrior on clips of a training config's data section, with the model's frozen VAE and "
        "text encoder, and write the model folder with it added (docs/training.md, 'Caption prior').",
    )
    parser.add_argument("--model", required=True, help="the model folder to add the prior to")
    parser.add_argument("--config", required=True, help="YAML training config whose data section gives the clips")
    _add_overrides_argument(parser, "e.g. --set data.toyworld.seed=27")
    parser.add_argument("-o", "--output", required=True, help="the model folder to write (the input stays as it is)")
    parser.add_argument("--clips", type=int, default=4000, help="clips to encode and fit on (default 4000)")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps on the encoded clips (default 2000)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per optimiser step (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    parser.add_argument("--device", default="cpu", help="device for encoding the clips (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.set_defaults(func=_run_prior)


def _run_prior(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.training.caption_prior import encode_clips, fit_caption_prior
    from hummingbird_t2v.training.config import (
        DataConfig,
        apply_overrides,
        build_dataclass,
        read_yaml,
    )
    from hummingbird_t2v.training.data import build_source

    if Path(args.output).resolve() == Path(args.model).resolve():
        raise ConfigError("--output must differ from --model: the prior is added to a copy, so the input folder stays intact")
    data = build_dataclass(DataConfig, apply_overrides(read_yaml(args.config), args.overrides).get("data", {}), "data")
    pipe = HummingbirdPipeline.from_pretrained(args.model, device=args.device)
    defaults = pipe.config.defaults
    if (data.video_length, data.height, data.width) != (defaults.num_frames, defaults.height, defaults.width):
        print(f"note: clips are {data.video_length}x{data.height}x{data.width} (the config's data section); "
              f"the model samples {defaults.num_frames}x{defaults.height}x{defaults.width} by default")
    with tqdm(total=args.clips, unit="clip", desc="encoding") as bar:
        contexts, latents = encode_clips(pipe.vae, pipe.text_encoder, build_source(data), args.clips,
                                         shuffle_seed=data.shuffle_seed, progress=bar.update)
    prior, fit = fit_caption_prior(contexts, latents, steps=args.steps, batch_size=args.batch_size, lr=args.lr)
    print(fit.summary())
    pipe.prior = prior.to(pipe.device)
    folder = pipe.save_pretrained(args.output, overwrite=args.overwrite)
    print(f"model folder with the caption prior: {folder}")
    return 0


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )


def add_parser(subparsers: Any) -> None:
    from hummingbird_t2v.training.objectives import available_objectives

    parser = subparsers.add_parser(
        "train",
        help="train a model: base/teacher diffusion, stage-1 distillation, stage-2 consistency distillation",
        description="Train with one of the registered objectives, export a run's model folder, or merge a stage-2 run's LoRA.",
    )
    stages = parser.add_subparsers(dest="train_command", metavar="STAGE")
    for spec in sorted(available_objectives().values(), key=lambda s: s.name):
        if spec.command:
            _add_objective_command(stages, spec)
    _add_export_command(stages)
    _add_merge_lora_command(stages)
    _add_prior_command(stages)

    def show_help(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=show_help)
