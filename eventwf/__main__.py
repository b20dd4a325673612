"""The eventwf command line: ``python -m eventwf example [--db PATH]``."""

from __future__ import annotations

import argparse
import logging

from . import _example


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eventwf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    example = commands.add_parser("example", help="run a small workflow end to end on a file")
    example.add_argument("--db", default="eventwf-example.db", help="the SQLite log file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "example":
        _example.main(args.db)


if __name__ == "__main__":
    main()
