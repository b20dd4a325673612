"""A throwaway PostgreSQL server for the tests, or the one ``EVENTWF_TEST_POSTGRES_URL`` names.

Theory of operation. :class:`PgCluster` makes a cluster in a temporary directory with the
installed server binaries (``initdb``, then ``pg_ctl start`` on a free 127.0.0.1 port, its
Unix socket in that directory). PostgreSQL refuses to run as root, so as root the
binaries run as the ``postgres`` OS user (``runuser``), which owns the directory. Before
the server starts, a watchdog process is started in a session of its own, holding the
read end of a pipe this process writes nothing to: when the pipe closes (a clean end, a
failed test session, a SIGKILL of pytest), the watchdog stops the server and deletes the
directory, so no server outlives the tests. :class:`ExternalServer` instead makes its
databases on a server the user runs (the user needs ``CREATEDB``) and drops them after.

Both hand out fresh databases cheaply (``CREATE DATABASE``, each test its own). The
pytest fixtures at the end skip, saying why, when psycopg, the binaries or a usable OS
user are missing; ``EVENTWF_TEST_REQUIRE_POSTGRES=1`` (CI) turns those skips into failures.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

__all__ = ["ENV_REQUIRE", "ENV_URL", "ExternalServer", "PgCluster", "Unavailable", "find_bindir",
           "fresh_postgres_url", "open_server", "pg_server", "postgres_url", "unavailable"]

ENV_URL = "EVENTWF_TEST_POSTGRES_URL"
ENV_REQUIRE = "EVENTWF_TEST_REQUIRE_POSTGRES"
BINARIES_GLOB = "/usr/lib/postgresql/*/bin"
HOW_TO_GET = (f"install Debian's postgresql package (apt-get install postgresql) or set "
              f"{ENV_URL} to a server whose user may CREATE DATABASE")

# For tests only: these settings give up durability against an OS crash or power loss of
# the *server*, which no test causes (tests SIGKILL engines, never the server), and they do
# not change what a committed transaction means to other sessions. Never use them for data.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}

# Started in a session of its own before the server: it waits for this process's end of
# its stdin pipe to close, then stops the server (immediate mode: the data is thrown away)
# and deletes the directory. Kept to the standard library: it must not import the tests.
_WATCHDOG = r"""
import os, shutil, signal, subprocess, sys
pg_ctl, data, root, *run_as = sys.argv[1:]
sys.stdin.buffer.read()
subprocess.run([*run_as, pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "60"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
try:
    with open(os.path.join(data, "postmaster.pid")) as f:
        os.kill(int(f.readline()), signal.SIGKILL)  # pg_ctl could not stop it: end it
except (OSError, ValueError):
    pass
shutil.rmtree(root, ignore_errors=True)
"""


def find_bindir(binaries: str = BINARIES_GLOB) -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` directory (None: none installed)."""
    found = [Path(p).parent for p in Path("/").glob(binaries.lstrip("/") + "/initdb")]
    found = [p for p in found if (p / "pg_ctl").exists()]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    return max(found, key=version) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, ""))


class _Databases:
    """Fresh databases on a server, made with ``CREATE DATABASE`` from an admin URL."""

    admin_url: str

    def __init__(self) -> None:
        self.made: list[str] = []

    def new_database(self, template: str = "template0") -> str:
        """The URL of a new, empty database (``template`` may be one made here)."""
        import psycopg
        from psycopg import sql

        name = f"eventwf_test_{os.getpid()}_{len(self.made)}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)))
            except psycopg.errors.InsufficientPrivilege as exc:
                raise RuntimeError(f"the tests make a database per test, and this server's "
                                   f"user may not: grant it CREATEDB ({exc})") from exc
        self.made.append(name)
        return _with_dbname(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database made here (its open connections are ended)."""
        import psycopg
        from psycopg import sql

        name = urlsplit(url).path.lstrip("/")
        assert name in self.made, f"{name!r} was not made by these tests"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        self.made.remove(name)


class ExternalServer(_Databases):
    """A server the user runs (``EVENTWF_TEST_POSTGRES_URL``): databases made and dropped."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.admin_url = url

    def close(self) -> None:
        for url in [_with_dbname(self.admin_url, name) for name in self.made]:
            self.drop_database(url)


class PgCluster(_Databases):
    """A cluster of its own in a temporary directory; :meth:`close` stops and deletes it.

    ``fast`` applies :data:`FAST_SETTINGS` (tests); without it the server keeps
    PostgreSQL's durable defaults (benchmarks)."""

    def __init__(self, bindir: Path, *, fast: bool = True) -> None:
        super().__init__()
        self.bindir = bindir
        self.run_as = _run_as()
        self.user = "postgres"
        self.password = secrets.token_urlsafe(18)
        self.root = Path(tempfile.mkdtemp(prefix="eventwf-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._watchdog: subprocess.Popen[bytes] | None = None
        try:
            self._initdb()
            self._configure(fast)
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(bindir / "pg_ctl"), str(self.data),
                 str(self.root), *self.run_as],
                stdin=subprocess.PIPE, start_new_session=True)
            self._start()
        except BaseException:
            self.close()
            raise
        self.admin_url = self.url("postgres")

    def url(self, dbname: str) -> str:
        return (f"postgresql://{self.user}:{quote(self.password, safe='')}@127.0.0.1:"
                f"{self.port}/{quote(dbname)}")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.run_as, *args], capture_output=True, text=True,
                              check=False, cwd=self.root)

    def _initdb(self) -> None:
        if self.run_as:  # root: the server's user owns the directory it writes
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        pwfile.chmod(0o600)
        # scram on TCP: a superuser on a shared machine's loopback must not be open to all.
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                         f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                         "--auth-local=peer", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed in {self.root} (exit {done.returncode}): "
                               f"{done.stderr.strip()[-2000:]}")

    def _configure(self, fast: bool) -> None:
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.root),
                    **(FAST_SETTINGS if fast else {})}
        lines = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# eventwf tests\n" + lines)

    def _start(self) -> None:
        """Start on a free port; another process may take the port meanwhile: retry."""
        for _ in range(5):
            self.port = _free_port()
            done = self._run(str(self.bindir / "pg_ctl"), "start", "-D", str(self.data), "-w",
                             "-t", "60", "-l", str(self.root / "server.log"),
                             "-o", f"-p {self.port}")
            if done.returncode == 0:
                return
            log = self.log_tail()
            if "already in use" not in log:
                break
        raise RuntimeError(f"pg_ctl start failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-1000:]}\n{log}")

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def close(self) -> None:
        """Stop the server and delete its directory (the watchdog does both, now)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            assert watchdog.stdin is not None
            watchdog.stdin.close()
            watchdog.wait(timeout=120)
        else:  # the server never started: only the directory is left
            shutil.rmtree(self.root, ignore_errors=True)

    def running(self) -> bool:
        """Whether the server's postmaster process is alive."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True


def _run_as() -> list[str]:
    """The command prefix that runs the server binaries as a user other than root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("the tests run as root, PostgreSQL refuses to run as root, and "
                          "there is no 'postgres' OS user to run it as: create one (Debian's "
                          "postgresql package does) or run the tests as a normal user"
                          ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("the tests run as root and 'runuser' (util-linux) is missing, so "
                          "the server cannot be run as the 'postgres' user")
    return [runuser, "-u", "postgres", "--"]


class Unavailable(Exception):
    """PostgreSQL cannot be provided here; the message says why and what to do."""


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when CI requires PostgreSQL (``EVENTWF_TEST_REQUIRE_POSTGRES``)."""
    if os.environ.get(ENV_REQUIRE, "") not in ("", "0"):
        pytest.fail(f"PostgreSQL tests required ({ENV_REQUIRE} is set), but: {reason}",
                    pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason}")


def open_server(environ: Mapping[str, str] | None = None, binaries: str = BINARIES_GLOB
                ) -> PgCluster | ExternalServer:
    """The server the environment names, else a throwaway cluster; ``Unavailable`` saying
    what is missing and how to get it."""
    env = os.environ if environ is None else environ
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Unavailable("psycopg is not installed: pip install -e '.[dev]' (or "
                          "'.[postgres]')") from None
    if env.get(ENV_URL):
        return ExternalServer(env[ENV_URL])
    bindir = find_bindir(binaries)
    if bindir is None:
        raise Unavailable(f"no PostgreSQL server binaries ({binaries}/initdb): {HOW_TO_GET}")
    return PgCluster(bindir)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgCluster | ExternalServer]:
    """The server of this session: ``EVENTWF_TEST_POSTGRES_URL``, else a throwaway cluster."""
    try:
        server = open_server()
    except Unavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url(pg_server: PgCluster | ExternalServer) -> str:
    """A fresh database for the session (tests that share it use their own names)."""
    return pg_server.new_database()


@pytest.fixture
def fresh_postgres_url(pg_server: PgCluster | ExternalServer) -> Iterator[str]:
    """A fresh database for this test only, dropped after it."""
    url = pg_server.new_database()
    yield url
    pg_server.drop_database(url)

