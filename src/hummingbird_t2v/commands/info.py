"""`hummingbird info CHECKPOINT`: what a weights file or model folder holds."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a checkpoint file or model folder")
    parser.add_argument("checkpoint", help="checkpoint file, model folder or hub id")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hummingbird_t2v.checkpoints.hub import resolve_checkpoint
    from hummingbird_t2v.checkpoints.summary import summarize

    summary = summarize(resolve_checkpoint(args.checkpoint))
    for line in summary.lines():
        print(line)
    return 0
