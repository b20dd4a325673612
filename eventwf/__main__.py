"""The eventwf command line: ``python -m eventwf demo`` or ``python -m eventwf example``."""

from __future__ import annotations

import argparse
import logging
import sys

from eventwf.apps import demo as _demo
from eventwf.apps import example as _example


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventwf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="serve the live task board (workflows with progress and an approval gate)")
    demo.add_argument("--db", default="eventwf-demo.db", help="the SQLite log file")
    demo.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    demo.add_argument("--port", type=int, default=8080, help="the port (0 picks a free one)")
    demo.add_argument("--step-seconds", type=float, default=1.5,
                      help="the durable sleep after each step of a task")
    example = commands.add_parser("example", help="run a small workflow end to end on a file")
    example.add_argument("--db", default="eventwf-example.db", help="the SQLite log file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        return _demo.main(args.db, args.host, args.port, args.step_seconds)
    _example.main(args.db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
