"""`hummingbird train ...`: one sub-command per registered objective, plus `export`.

    hummingbird train base --config configs/toy_teacher.yaml [--set optim.lr=1e-4 ...] [--resume] [--output DIR]
    hummingbird train export --run DIR [--checkpoint DIR] [-o OUT]

Objectives bring their own sub-command (`ObjectiveSpec.command`, see training.objectives), so
`train distill` and `train consistency` appear once their modules exist. Multi-process runs use
the same command under a launcher:

    torchrun --nproc_per_node 4 -m hummingbird_t2v.cli train base --config ...
    accelerate launch -m hummingbird_t2v.cli train base --config ...
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from hummingbird_t2v.errors import ConfigError

__all__ = ["add_parser"]


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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value (repeatable), e.g. --set optim.lr=1e-4 --set run.max_steps=2000",
    )
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
        print(f'try it: hummingbird generate "{config.sample.prompts[0]}" --weights {result.model_dir}')
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
        help="train a model (base/teacher diffusion; distillation stages as they are added)",
        description="Train with one of the registered objectives, or export a run's model folder.",
    )
    stages = parser.add_subparsers(dest="train_command", metavar="STAGE")
    for spec in sorted(available_objectives().values(), key=lambda s: s.name):
        if spec.command:
            _add_objective_command(stages, spec)
    _add_export_command(stages)

    def show_help(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=show_help)
