"""The `vipstream` command. Each subcommand lives in `vipstream/commands/<name>.py` and exposes
`register(subparsers)`; its handler imports the heavy machinery lazily, so `vipstream --help`
stays instant and a subcommand never pays for another's imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vipstream.config import ConfigError
from vipstream.errors import JobError

#: Subcommand modules, in the order a user runs them (and `--help` lists them).
COMMANDS = ("synth", "fetch", "transcribe", "build", "caption", "inspect", "train", "eval", "convert", "demo")
#: What `vipstream --help` says the tool does (the module docstring above is for developers).
DESCRIPTION = ("Turn subtitled web videos into WebDataset shards of clips and captions, then train "
               "and evaluate a CLIP-ViP video-text retrieval model on them.")
EXIT_CODES = ("exit codes: 0 done; 1 the job could not finish every unit of work, or its output is "
              "in use by another run (rerun to resume); 2 bad configuration or input, nothing done")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vipstream", description=DESCRIPTION, epilog=EXIT_CODES)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"vipstream.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vipstream.commands.{name}":
                continue  # not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"vipstream {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except JobError as exc:
        print(f"vipstream {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
