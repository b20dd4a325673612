"""The eventwf command line: ``eventwf demo``, ``example``, ``log`` and ``console``.

Installed as the ``eventwf`` console command (pyproject ``[project.scripts]``) and also
reachable as ``python -m eventwf``. ``eventwf log PATH COMMAND ...`` is the log tool
(``eventwf.logtool``): everything after ``log`` is its own command line, with its own
``--help`` and exit statuses (0 all well, 1 a problem found, 2 a usage error).
``eventwf console PATH_OR_URL`` serves the read-only web console of a log file or a
PostgreSQL database.
"""

from __future__ import annotations

import argparse
import logging
import sys

from eventwf.apps import console as _console
from eventwf.apps import demo as _demo
from eventwf.apps import example as _example
from eventwf.logtool import cli as _logtool

__all__ = ["build_parser", "main"]

PROG = "eventwf"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser. ``log`` is listed here for ``--help``; :func:`main` hands its
    arguments to the log tool's own parser before this one sees them."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="eventwf: durable workflows and live agents for trio. Run the "
        "demo or the example, or inspect a log with `eventwf log PATH COMMAND`.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="serve the live task board (workflows with progress and an approval gate)")
    demo.add_argument("--db", default="eventwf-demo.db",

                         help="the log: a SQLite file or a postgresql:// URL")
    demo.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    demo.add_argument("--port", type=int, default=8080, help="the port (0 picks a free one)")
    demo.add_argument("--step-seconds", type=float, default=1.5,
                      help="the durable sleep after each step of a task")
    demo.add_argument("--lease-ttl", type=float, default=15.0,
                      help="PostgreSQL, several demo servers on one database: seconds before "
                           "a dead server's boards move to another")
    example = commands.add_parser("example", help="run a small workflow end to end on a file")
    example.add_argument("--db", default="eventwf-example.db", help="the SQLite log file")
    console = commands.add_parser(
        "console", help="serve the read-only web console of a log: workflows, agents, the log")
    console.add_argument("db", metavar="PATH_OR_URL",
                         help="the log: a SQLite file or a postgresql:// URL")
    console.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    console.add_argument("--port", type=int, default=8081, help="the port (0 picks a free one)")
    commands.add_parser(
        "log", add_help=False,
        help="inspect, verify, check or back up a log: eventwf log PATH COMMAND ... "
             "(eventwf log --help lists its commands)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args_in = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args_in[:1] == ["log"]:
        return _logtool.main(args_in[1:], prog=f"{PROG} log")
    args = build_parser().parse_args(args_in)
    if args.command == "demo":
        return _demo.main(args.db, args.host, args.port, args.step_seconds, args.lease_ttl)
    if args.command == "console":
        return _console.main(args.db, args.host, args.port)
    if args.command == "example":
        _example.main(args.db)
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # `log` is handled above


if __name__ == "__main__":
    sys.exit(main())
