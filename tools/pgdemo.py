"""Two demo servers on one PostgreSQL database: kill one, the board carries on from the other.

    python -m tools.pgdemo                 # a throwaway cluster of the installed server binaries
    python -m tools.pgdemo --url postgresql://user@host/db

Starts ``eventwf demo`` twice (two engine processes, ports 8001 and 8002 by default) on the
same database, prints each one's address and pid, and stops both (and the throwaway
cluster) on Ctrl-C. Open a board on one, ``kill`` that server's pid: after the lease
(``--lease-ttl``) the other engine takes its boards over and their tasks finish there;
open the same board on the other port to watch (specs/postgres.md, README "Running on
PostgreSQL"). Runs the installed ``eventwf`` command; imports only the store's
``without_password`` (D5).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from eventwf.store.location import without_password
from tools.pgserver import NoServer, open_server

__all__ = ["main"]


def _start(url: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "eventwf", "demo", "--db", url, "--host", args.host,
               "--port", str(port), "--step-seconds", str(args.step_seconds),
               "--lease-ttl", str(args.lease_ttl)]
    return subprocess.Popen(command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgdemo", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--url", help="a PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ports", type=int, nargs="+", default=[8001, 8002])
    parser.add_argument("--step-seconds", type=float, default=2.0)
    parser.add_argument("--lease-ttl", type=float, default=5.0,
                        help="seconds before a dead server's boards move (default 5)")
    args = parser.parse_args(argv)
    try:
        with open_server(args.url) as server:
            _run(server.new_database(), args)
    except NoServer as exc:
        raise SystemExit(f"tools.pgdemo: {exc}") from exc
    return 0


def _run(url: str, args: argparse.Namespace) -> None:
    """Start the demo servers on ``url``, say where they are, and stop them on Ctrl-C or
    once none is left running."""
    servers = [(port, _start(url, port, args)) for port in args.ports]
    print(f"database: {without_password(url)}", flush=True)
    for port, proc in servers:
        print(f"engine pid {proc.pid}: http://{args.host}:{port}/", flush=True)
    print("Open a board on one, then `kill <pid>` that server: the other carries it on. "
          "Ctrl-C stops everything.", flush=True)
    try:
        while any(proc.poll() is None for _, proc in servers):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for _, proc in servers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for _, proc in servers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
