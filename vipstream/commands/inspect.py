"""`vipstream inspect OUT`: shards, clips, errors and the captioners present with their coverage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect", help="summarise a build output: shards, clips, errors, captioners and coverage",
        description="Reads only metadata (stats files, parquet footers), never video bytes.")
    parser.add_argument("output", type=Path, help="build output directory (holding shards/)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipeline.inspect_output import format_report, inspect_output

    report = inspect_output(args.output)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
