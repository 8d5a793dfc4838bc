"""The ``pgolf`` command line: one subcommand per pipeline step (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from pgolf import check, compare, configcheck, corpus, data, fa3, pack, record, stages, upstream

    parser = argparse.ArgumentParser(prog="pgolf", description=__doc__)
    parser.add_argument(
        "--console-fd",
        dest="console_tap",
        type=int,
        help="also show the step's status on this file descriptor (the terminal) at least every 30 s (pgolf.console)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (corpus, data, fa3, pack, stages, record, check, compare, upstream, configcheck):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = None
    if args.console_tap is not None:
        from pgolf.console import tap_stdout

        if hasattr(args, "console_fd"):  # a step that shows its script's progress itself (train, evaluate, ...)
            args.console_fd = args.console_fd if args.console_fd is not None else args.console_tap
        else:
            console = tap_stdout(args.console_tap, args.command)
    code = None
    try:
        code = int(args.func(args) or 0)
        return code
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"pgolf {args.command}: error: {e}", file=sys.stderr)
        code = 2
        return 2
    finally:
        if console is not None:
            console.stop(code)


if __name__ == "__main__":
    sys.exit(main())
