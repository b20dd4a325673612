"""The PostgreSQL server a tool runs against: the one ``--url`` names, or a throwaway cluster.

The PostgreSQL benchmarks (``tools.bench.pg``, ``tools.bench.pgfollow``, ``python -m
tools.bench --backend postgres``) and the two-server demo (``tools.pgdemo``) all take
``--url``; without it each starts a throwaway cluster from the installed server binaries
with the tests' cluster manager (``tests/pg_cluster.py``'s ``PgCluster``), with
PostgreSQL's durable defaults (``fsync``, ``synchronous_commit=on``: ``fast=False``, not
the tests' fast settings), and deletes it after (its watchdog deletes it too when the tool
is killed). :func:`open_server` is that choice, made once for all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NoServer", "Server", "open_server"]


class NoServer(Exception):  # noqa: N818 - a condition the tools report, not a bug
    """No ``--url`` and no installed PostgreSQL server binaries to start a cluster with."""


@dataclass(frozen=True)
class Server:
    """Where a tool's databases are.

    ``new_database`` gives a database URL: a fresh database per call on a throwaway
    cluster, the ``--url`` itself every time otherwise. ``where`` says which, for results;
    ``bindir`` is the throwaway cluster's server binaries (None with ``--url``).
    """

    new_database: Callable[[], str]
    where: str
    bindir: Path | None


@contextmanager
def open_server(url: str | None) -> Iterator[Server]:
    """The server ``url`` names, or (``url`` None) a throwaway cluster, deleted on exit.

    Raises :class:`NoServer` when ``url`` is None and no server binaries are installed
    (``/usr/lib/postgresql/*/bin``), before anything is started.
    """
    if url is not None:
        given = url
        yield Server(lambda: given, "given by --url", None)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.pg_cluster import PgCluster, find_bindir  # the tests' cluster manager

    bindir = find_bindir()
    if bindir is None:
        raise NoServer("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): install "
                       "Debian's postgresql package or pass --url")
    cluster = PgCluster(bindir, fast=False)
    try:
        yield Server(cluster.new_database, f"throwaway cluster of {bindir} (durable defaults)",
                     bindir)
    finally:
        cluster.close()
