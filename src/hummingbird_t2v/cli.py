"""The `hummingbird` command: parses arguments and calls the layers below; no logic of its own."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hummingbird_t2v.errors import HummingbirdError

# Each sub-command lives next to the code it drives and exposes `add_parser(subparsers)`, which
# registers its arguments and sets `func` (a callable taking the parsed namespace, returning an
# exit code). Modules are imported lazily so that `hummingbird --help` stays fast.
_COMMAND_MODULES = (
    "hummingbird_t2v.commands.generate",
    "hummingbird_t2v.commands.convert",
    "hummingbird_t2v.commands.info",
    "hummingbird_t2v.curation.cli",
    "hummingbird_t2v.pruning.cli",
    "hummingbird_t2v.toyworld.cli",
    "hummingbird_t2v.training.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hummingbird", description="Efficient text-to-video.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # A command whose optional dependencies (an extra) are missing is hidden, not fatal.
            if error.name and not error.name.startswith("hummingbird_t2v"):
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HummingbirdError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
