"""`hummingbird curate INPUT -o OUT`: the command-line face of the curation pipeline."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "curate",
        help="score, filter and re-caption a video collection",
        description=(
            "Measure every clip of INPUT (a folder of videos, or a CSV in the 'path,text' or WebVid "
            "'page_dir,videoid,name' layout), drop low-quality, static and dolly-zoom clips, re-caption "
            "the rest with an LLM, and write OUT/manifest.parquet, OUT/manifest.csv and OUT/curated.csv."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="folder of videos or CSV file")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--config", metavar="YAML", help="curation config (see configs/curation.yaml)")
    parser.add_argument("--stages", help="comma-separated subset of quality,motion,recaption (default: config's)")
    parser.add_argument("--data-dir", help="folder that CSV paths are relative to (default: the CSV's folder)")
    parser.add_argument("--engine", choices=("local", "ray"), help="local process pool or Ray Data")
    parser.add_argument("--workers", type=int, help="local engine: processes (0 = one per core, 1 = no pool)")
    parser.add_argument("--ray-address", help="ray engine: 'auto' joins a running cluster (default: start a local Ray)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    parser.add_argument("--overwrite", action="store_true", help="discard a previous run in OUT")
    parser.add_argument("--dover-weights", help="DOVER.pth: add DOVER technical/aesthetic/overall scores")
    parser.add_argument("--recaption-backend", choices=("openai", "transformers"))
    parser.add_argument("--recaption-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--recaption-model", help="model name sent to the server")
    parser.add_argument("--recaption-model-path", help="transformers backend: model folder or .gguf file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hummingbird_t2v.curation.config import load_config, parse_stages, with_overrides
    from hummingbird_t2v.curation.pipeline import run_curation
    from hummingbird_t2v.errors import ConfigError

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; pick one")
    config = load_config(args.config)
    engine = {k: v for k, v in {"kind": args.engine, "workers": args.workers, "ray_address": args.ray_address}.items() if v is not None}
    recaption = {
        k: v
        for k, v in {
            "backend": args.recaption_backend,
            "base_url": args.recaption_url,
            "model": args.recaption_model,
            "model_path": args.recaption_model_path,
        }.items()
        if v is not None
    }
    overrides: dict[str, Any] = {"engine": engine, "recaption": recaption}
    if args.dover_weights:
        overrides["quality"] = {"dover.weights": args.dover_weights}
    if args.stages:
        overrides["stages"] = list(parse_stages(args.stages))
    config = with_overrides(config, **overrides)
    summary = run_curation(
        args.input,
        args.output,
        config,
        data_dir=args.data_dir,
        resume=args.resume,
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
    )
    for line in summary.lines():
        print(line, file=sys.stdout)
    return 0
