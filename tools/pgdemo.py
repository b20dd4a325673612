"""Two demo servers on one PostgreSQL database: kill one, the board carries on from the other.

    python -m tools.pgdemo                 # a throwaway cluster of the installed server binaries
    python -m tools.pgdemo --url postgresql://user@host/db

Starts ``eventwf demo`` twice (two engine processes, ports 8001 and 8002 by default) on the
same database, prints each one's address and pid, and stops both (and the throwaway
cluster) on Ctrl-C. Open a board on one, ``kill`` that server's pid: after the lease
(``--lease-ttl``) the other engine takes its boards over and their tasks finish there;
open the same board on the other port to watch (specs/postgres.md, README "Running on
PostgreSQL"). Uses the installed ``eventwf`` command only (public layer, D5).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["main"]


def _shown(url: str) -> str:
    """The URL with its password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg_cluster import PgCluster, find_bindir  # the tests' cluster manager

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("tools.pgdemo: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin):"
                         " install Debian's postgresql package, or pass --url")
    cluster = PgCluster(bindir, fast=False)
    try:
        yield cluster.new_database()
    finally:
        cluster.close()


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
    with _database(args.url) as url:
        servers = [(port, _start(url, port, args)) for port in args.ports]
        print(f"database: {_shown(url)}", flush=True)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
