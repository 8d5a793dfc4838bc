"""The ``pgolf`` command line: one subcommand per pipeline step (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from pgolf import check, compare, configcheck, corpus, data, fa3, pack, record, stages, upstream

    parser = argparse.ArgumentParser(prog="pgolf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (corpus, data, fa3, pack, stages, record, check, compare, upstream, configcheck):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"pgolf {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
