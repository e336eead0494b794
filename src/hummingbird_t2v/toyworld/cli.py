"""`hummingbird toyworld ...`: make toy datasets and list the toy vocabulary.

Each sub-command is registered by one `_add_<name>` function listed in `_SUBCOMMANDS`, so later
ones (e.g. `eval`) slot in beside `make`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from hummingbird_t2v.errors import ConfigError

__all__ = ["add_parser"]


def _parse_size(text: str) -> tuple[int, int]:
    """ "64" -> (64, 64); "48x80" -> (48, 80) as height x width."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not match:
        raise ConfigError(f"--size must be N or HxW (e.g. 64 or 48x80), got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    return height, width


def _parse_list(text: str | None, option: str, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    if text is None:
        return None
    values = tuple(value.strip() for value in text.split(",") if value.strip())
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise ConfigError(f"{option}: unknown value(s) {unknown or [text]}; choose from {','.join(allowed)}")
    return values


def _config_from_args(args: argparse.Namespace) -> Any:
    from hummingbird_t2v.toyworld import vocabulary as vocab
    from hummingbird_t2v.toyworld.generator import ToyWorldConfig
    from hummingbird_t2v.toyworld.scene import SceneVocabulary

    height, width = _parse_size(args.size)
    lists = {
        "shapes": _parse_list(args.shapes, "--shapes", vocab.SHAPES),
        "colors": _parse_list(args.colors, "--colors", vocab.COLORS),
        "sizes": _parse_list(args.sizes, "--sizes", vocab.SIZES),
        "motions": _parse_list(args.motions, "--motions", vocab.MOTIONS),
        "backgrounds": _parse_list(args.backgrounds, "--backgrounds", vocab.BACKGROUNDS),
        "cameras": _parse_list(args.cameras, "--cameras", vocab.CAMERAS),
        "degradations": _parse_list(args.degradations, "--degradations", vocab.DEGRADATIONS),
    }
    scene_vocabulary = SceneVocabulary(
        **{name: values for name, values in lists.items() if values is not None},
        two_object_fraction=args.two_object_fraction,
        camera_motion_fraction=args.camera_motion_fraction,
    )
    return ToyWorldConfig(
        height=height,
        width=width,
        num_frames=args.frames,
        fps=args.fps,
        seed=args.seed,
        degraded_fraction=args.degraded_fraction,
        paraphrase=not args.canonical_captions,
        vocabulary=scene_vocabulary,
    )


def _run_make(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hummingbird_t2v.toyworld.generator import make_dataset

    config = _config_from_args(args)
    with tqdm(total=args.n, unit="clip", desc="toyworld", disable=None) as bar:
        report = make_dataset(
            args.output,
            args.n,
            config,
            crf=args.crf,
            pix_fmt=args.pix_fmt,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    print(
        f"wrote {report.num_clips} clips ({config.height}x{config.width}, {config.num_frames} frames at "
        f"{config.fps} fps) and {report.csv_path}\n"
        f"rendering {report.render_clips_per_second:.0f} clips/s, with H.264 writing "
        f"{report.clips_per_second:.0f} clips/s"
    )
    return 0


def _run_vocab(args: argparse.Namespace) -> int:
    from hummingbird_t2v.toyworld.scene import describe_vocabulary

    print(describe_vocabulary(args.vocabulary))
    return 0


def _add_make(commands: Any) -> None:
    parser = commands.add_parser(
        "make",
        help="render a captioned toy dataset (mp4 + clips.csv)",
        description="Render clips 0..N-1 of a seeded toy world to DIR/videos/*.mp4 and DIR/clips.csv "
        "(columns path,text plus ground-truth attributes), readable by the training loader.",
    )
    parser.add_argument("--n", type=int, default=2000, help="number of clips (default 2000)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    parser.add_argument("--size", default="64", help="frame size, N or HxW, even numbers (default 64)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--fps", type=int, default=8, help="frame rate (default 8)")
    parser.add_argument("--degraded-fraction", type=float, default=0.0, help="share of degraded clips (default 0)")
    parser.add_argument("--two-object-fraction", type=float, default=0.25, help="share of two-object clips")
    parser.add_argument(
        "--camera-motion-fraction", type=float, default=0.25, help="share of clips with a moving camera"
    )
    parser.add_argument("--canonical-captions", action="store_true", help="no paraphrases: one wording per scene")
    for name in ("shapes", "colors", "sizes", "motions", "backgrounds", "cameras", "degradations"):
        parser.add_argument(f"--{name}", default=None, help=f"comma-separated subset of the {name} to use")
    parser.add_argument("--crf", type=int, default=10, help="H.264 quality, lower is better (default 10)")
    parser.add_argument(
        "--pix-fmt",
        choices=("yuv444p", "yuv420p"),
        default="yuv444p",
        help="yuv444p (default): exact colours at toy sizes; yuv420p: plays in every browser, even sizes only",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a toy dataset already in the folder")
    parser.set_defaults(func=_run_make)


def _add_vocab(commands: Any) -> None:
    parser = commands.add_parser("vocab", help="list the shapes, colors, motions, ... that captions use")
    parser.add_argument("--vocabulary", default="full", help="a vocabulary preset: full (default) or core (the built-in model's)")
    parser.set_defaults(func=_run_vocab)


def _add_eval(commands: Any) -> None:
    from hummingbird_t2v.toyworld.eval_cli import add_eval_parser

    add_eval_parser(commands)


def _add_compare(commands: Any) -> None:
    from hummingbird_t2v.toyworld.compare import add_compare_parser

    add_compare_parser(commands)


def _add_probe(commands: Any) -> None:
    from hummingbird_t2v.toyworld.probe import add_probe_parser

    add_probe_parser(commands)


def _add_recipe(commands: Any) -> None:
    from hummingbird_t2v.toyworld.recipe import add_recipe_parser

    add_recipe_parser(commands)


_SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_add_make, _add_vocab, _add_eval, _add_compare, _add_probe, _add_recipe)


def add_parser(subparsers: Any) -> None:
    """Register `toyworld` and its sub-commands on the main CLI's subparsers."""
    parser = subparsers.add_parser("toyworld", help="procedural captioned toy videos", description=__doc__)
    commands = parser.add_subparsers(dest="toyworld_command", metavar="SUBCOMMAND")
    for register in _SUBCOMMANDS:
        register(commands)

    def print_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=print_help)
