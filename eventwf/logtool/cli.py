"""Inspect, verify, back up and time-travel an eventwf log.

    eventwf log PATH COMMAND [options]
    python -m tools.eventlog PATH COMMAND [options]    (the same, from a clone)

Every command but rebuild-projections only reads, in short read transactions, so it is
safe beside a running engine. Output is readable tables; --json prints JSON lines.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import TextIO

import trio

from eventwf.errors import StorageError
from eventwf.store import is_url

from . import (
    agentstate,
    backup,
    check,
    export,
    listing,
    pgverify,
    stats,
    timeline,
    timeline_view,
    verify,
    verify_view,
)
from .pgsource import PgLogSource
from .render import Output, printable
from .source import LogSource, ToolError

__all__ = ["COMMANDS", "build_parser", "main"]

_EPILOG = ("exit status: 0 when all is well; 1 when the log (or the replay check) has a "
           "problem, or what was asked for is not in it; 2 for a usage error, a missing "
           "file, a factory that cannot be used, or a log an engine holds for writing. "
           "Requirements: specs/tools.md")


def _open(path: str) -> LogSource:
    """The log at ``path``: an SQLite file, or a PostgreSQL database by its URL."""
    return PgLogSource(path) if is_url(path) else LogSource(path)


def _streams(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        return listing.streams(log, out, kind=args.kind)


def _show(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        return listing.show(log, out, args.stream, full=args.full,
                            from_version=args.from_version)


def _tail(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        stream = None if args.stream is None else listing.resolve_stream(log, args.stream)
        status, head, printer = listing.tail(log, out, count=args.lines, full=args.full,
                                             stream=stream)
        if not args.follow:
            return status
        out.flush()
        try:
            return trio.run(lambda: listing.follow(log, out, head, stream=stream,
                                                   interval=args.interval, printer=printer))
        except KeyboardInterrupt:  # Ctrl-C is how one stops following
            return 1 if printer.damaged else 0


def _workflow(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        return timeline_view.render(timeline.build(log, args.workflow_id), out, full=args.full)


def _agent(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        return agentstate.agent(log, out, args.agent_class, args.name, at=args.at,
                                history=args.history)


def _stats(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        return stats.stats(log, out)


def _verify(args: argparse.Namespace, out: Output) -> int:
    if is_url(args.path):
        return verify_view.render(pgverify.verify(args.path, keep=args.max_problems), out)
    if not os.path.isfile(args.path):
        raise ToolError(f"{args.path}: no such file")
    return verify_view.render(verify.verify(args.path, keep=args.max_problems), out)


def _check(args: argparse.Namespace, out: Output) -> int:
    _open(args.path).close()  # a clear error for a file or database without an eventwf log
    return trio.run(lambda: check.check(args.path, args.factory, out, timeout=args.timeout,
                                        strict=args.strict))


def _export(args: argparse.Namespace, out: Output) -> int:
    with _open(args.path) as log:
        stream = None if args.stream is None else listing.resolve_stream(log, args.stream)
        if args.output is None:
            return export.export(log, Output(True, out.stream), fmt=args.format, stream=stream,
                                 after=args.after, until=args.until)
        with open(args.output, "w") as handle:
            return export.export(log, Output(True, handle), fmt=args.format, stream=stream,
                                 after=args.after, until=args.until)


def _backup(args: argparse.Namespace, out: Output) -> int:
    return backup.backup(args.path, args.output, out)


def _rebuild(args: argparse.Namespace, out: Output) -> int:
    return export.rebuild_projections(args.path, out, force=args.force)


def _count(text: str) -> int:
    """A non-negative integer argument (positions, counts)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


Handler = Callable[[argparse.Namespace, Output], int]
COMMANDS: dict[str, tuple[Handler, str]] = {
    "streams": (_streams, "every stream (agent, workflow) with counts, first/last position "
                "and time"),
    "show": (_show, "the decoded events of one stream, with positions and times"),
    "tail": (_tail, "the last events of the log; --follow keeps printing new ones"),
    "workflow": (_workflow, "a workflow's step timeline: attempts, errors, durations, sleeps, "
                 "waits, events received, status changes"),
    "agent": (_agent, "an agent's state now, or as of a log position (--at)"),
    "stats": (_stats, "counts by event type and stream kind, sizes, append rate"),
    "verify": (_verify, "prove the log intact, or name the first bad position and what is "
               "wrong"),
    "check": (_check, "replay every unfinished workflow against the current code (read-only)"),
    "export": (_export, "every event as JSON lines"),
    "backup": (_backup, "a consistent copy of the log into a new file, safe while an engine "
               "writes (SQLite's online backup)"),
    "rebuild-projections": (_rebuild, "rebuild the workflows/agents tables from the log (the "
                            "only command that writes)"),
}


def _add_commands(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for name, (_, summary) in COMMANDS.items():
        parsers[name] = p = commands.add_parser(name, help=summary, epilog=_EPILOG,
                                                description=summary[0].upper() + summary[1:] + ".")
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print JSON lines instead of tables")
    parsers["streams"].add_argument("--kind", choices=("wf", "agent"),
                                    help="only workflow or only agent streams")
    show = parsers["show"]
    show.add_argument("stream", metavar="STREAM",
                      help="wf:ID, agent:Class/name, a workflow id, or Class/name")
    show.add_argument("--from-version", type=_count, default=0, metavar="N",
                      help="start at this stream version")
    tail = parsers["tail"]
    tail.add_argument("-n", "--lines", type=_count, default=20, metavar="N",
                      help="how many of the last events to print first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="keep printing events as a running engine commits them (Ctrl-C "
                           "stops)")
    tail.add_argument("--stream", metavar="STREAM", help="only this stream")
    tail.add_argument("--interval", type=_seconds, default=0.5, metavar="SECONDS",
                      help="how often --follow polls (default 0.5)")
    parsers["workflow"].add_argument("workflow_id", metavar="ID", help="the workflow id")
    agent = parsers["agent"]
    agent.add_argument("agent_class", metavar="CLASS", help="the agent class name")
    agent.add_argument("name", metavar="NAME", help="the agent instance name")
    agent.add_argument("--at", type=_count, metavar="POSITION",
                       help="the state as of this log position (default: the head)")
    agent.add_argument("--history", action="store_true",
                       help="also list every state change up to that position")
    _add_more(parsers)
    for name in ("show", "tail", "workflow"):
        parsers[name].add_argument("--full", action="store_true",
                                   help="print whole values instead of cutting them short")


def _add_more(parsers: dict[str, argparse.ArgumentParser]) -> None:
    parsers["verify"].add_argument("--max-problems", type=_count, default=20, metavar="N",
                                   help="list at most N problems (all are counted; default 20)")
    check_parser = parsers["check"]
    check_parser.add_argument("factory", metavar="MODULE:FACTORY",
                              help="a dict, or a callable returning one, of open_engine "
                                   "keyword arguments with agents and workflows")
    check_parser.add_argument("--timeout", type=_seconds, default=60.0, metavar="SECONDS",
                              help="give up on replays still running after this (default 60)")
    check_parser.add_argument("--strict", action="store_true",
                              help="also fail on orphans (workflows with no registered code)")
    ex = parsers["export"]
    ex.add_argument("--format", choices=export.FORMATS, default="jsonl",
                    help="jsonl: each row with its place, time, event and hash (default); "
                         "golden: tests/golden.py history lines")
    ex.add_argument("--stream", metavar="STREAM", help="only this stream")
    ex.add_argument("--after", type=_count, default=0, metavar="POSITION",
                    help="only events after this position")
    ex.add_argument("--until", type=_count, metavar="POSITION",
                    help="only events up to this position")
    ex.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parsers["backup"].add_argument("output", metavar="OUT",
                                   help="the new file (never overwritten)")
    parsers["rebuild-projections"].add_argument(
        "--force", action="store_true",
        help="rebuild even when the log's anchor says its tail was cut or rewritten")


def build_parser(prog: str = "eventwf log") -> argparse.ArgumentParser:
    """The parser of ``PATH COMMAND ...``; ``prog`` is how the usage lines name the tool."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH",
                        help="the eventwf log: its SQLite file, or a postgresql:// URL")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not tables")
    _add_commands(parser)
    return parser


_SQLITE_ONLY = {  # command -> why it refuses a PostgreSQL URL (specs/tools.md V20)
    "rebuild-projections": "on PostgreSQL the engine writes the projections in the "
                           "transaction of their events and rebuilds them itself when it "
                           "opens the database",
}


def _refuse_url(path: str, command: str) -> None:
    """The commands that read only SQLite files say so for a URL (``backup`` says more);
    the password of the URL is never printed (only what follows its ``@``)."""
    if is_url(path) and command in _SQLITE_ONLY:
        raise ToolError(f"{command} is for SQLite log files; {path.split('@')[-1]} is a "
                        f"PostgreSQL database: {_SQLITE_ONLY[command]}")


def main(argv: list[str] | None = None, stdout: TextIO | None = None, *,
         prog: str = "eventwf log") -> int:
    """Run one command; returns the exit status (see the epilog). A usage error exits
    with status 2 through argparse's ``SystemExit``."""
    args = build_parser(prog).parse_args(argv)
    out = Output(json=args.json, stream=stdout)
    try:
        _refuse_url(args.path, args.command)
        return COMMANDS[args.command][0](args, out)
    except ToolError as exc:
        out.flush()
        print(printable(f"eventlog: {exc}"), file=sys.stderr)
        return exc.exit_code
    except StorageError as exc:  # a PostgreSQL log failed to answer (its path hides the password)
        out.flush()
        print(printable(f"eventlog: {exc}"), file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as exc:
        out.flush()
        print(printable(f"eventlog: {args.path} cannot be read: {exc}; run `verify` for a "
                        "diagnosis"), file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        out.flush()

