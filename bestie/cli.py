"""Command line: ``python -m bestie <command> [options]``, one subcommand per pipeline rule.

Each command lives in a module of ``bestie.stages`` exposing ``add_arguments(parser)`` and
``run(args) -> None``; modules are imported only when their command runs, so ``--help``
stays fast. Rule names are these commands with ``_`` in place of ``-``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module under bestie.stages, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-dataset": ("prepare_dataset", "write the records and GT of one split"),
    "make-wsss": ("make_wsss", "write the WSSS label maps of one shard of a split"),
    "gather-wsss": ("gather_wsss", "merge WSSS map shards and write their mIoU"),
    "schema": ("schema", "print the config JSON schema generated from the dataclasses"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bestie",
        description="BESTIE weakly-supervised instance segmentation: pipeline stages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(command, help=help_text, description=help_text)
        sub.set_defaults(module=module)
        sub.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        # Options are added lazily in main(): importing every stage (and torch) for --help
        # would take seconds.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    module = importlib.import_module(f"bestie.stages.{known.module}")
    stage_parser = argparse.ArgumentParser(
        prog=f"python -m bestie {known.command}", description=COMMANDS[known.command][1]
    )
    stage_parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    module.add_arguments(stage_parser)
    args = stage_parser.parse_args(argv[argv.index(known.command) + 1 :])
    logging.basicConfig(
        level=logging.DEBUG if (args.verbose or known.verbose) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        module.run(args)
    except (ValueError, FileNotFoundError) as error:
        logging.getLogger("bestie").error("%s", error)
        return 1
    return 0
