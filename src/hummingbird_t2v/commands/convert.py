"""`hummingbird convert SRC OUT_DIR`: any supported weights file -> a diffusers-style model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from hummingbird_t2v.commands.common import DTYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint into a model folder (config.json + model.safetensors per component)",
        description="Read a VideoCrafter2 / Hummingbird checkpoint in any supported format (Lightning .ckpt, "
        "release *_merged_all.pt, DeepSpeed, state dict, safetensors) and write a folder that "
        "HummingbirdPipeline.from_pretrained and `hummingbird generate --weights` load.",
    )
    parser.add_argument("source", help="checkpoint file or hub id")
    parser.add_argument("output", type=Path, help="the model folder to create")
    parser.add_argument("--model", help="preset the U-Net must match: vc2, hb-0.9b, hb-0.7b (checked, optional)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="dtype of the saved weights")
    parser.add_argument("--text-heads", type=int, help="attention heads of the text encoder, for widths not divisible by 64")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hummingbird_t2v.checkpoints.hub import resolve_checkpoint
    from hummingbird_t2v.pipelines.hummingbird import HummingbirdPipeline
    from hummingbird_t2v.pipelines.single_file import load_pipeline_components

    source = resolve_checkpoint(args.source)
    parts = load_pipeline_components(source, model=args.model, text_num_heads=args.text_heads, dtype=DTYPES[args.dtype])
    pipe = HummingbirdPipeline(parts.unet, parts.vae, parts.text_encoder)
    folder = pipe.save_pretrained(args.output, overwrite=args.overwrite)
    kind = parts.unet_preset or "custom structure"
    print(f"wrote {folder} ({parts.source_format} -> model folder; U-Net: {kind}; sampler: {pipe.config.sampler})")
    return 0
