"""Where an engine's log lives, as ``open_engine`` was given it, its password kept unsaid.

A PostgreSQL store shows its URL without the password (``LogStore.path``), so nothing can
reopen the same database from it. A mounted console must (it reads through its own
read-only session, specs/console.md CN11, CN15): ``LogLocation`` carries the full text for
that one use, and prints as the password-less form everywhere else (``str``, ``repr``,
f-strings, logs, tracebacks of its attributes).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["LogLocation", "without_password"]

_URL_SCHEMES = ("postgresql://", "postgres://")


def without_password(location: str) -> str:
    """``location`` with the password of a URL replaced by ``***`` (a path unchanged)."""
    if not location.startswith(_URL_SCHEMES):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class LogLocation:
    """A log's location: a SQLite path (or ``":memory:"``) or a PostgreSQL URL.

    ``shown`` (and ``str``/``repr``) never holds a password; ``reopen_with()`` is the
    full text, for opening another (read-only) connection to the same log, and must
    never be printed, logged or put in a message.
    """

    __slots__ = ("_full", "shown")

    def __init__(self, location: str) -> None:
        self._full = location
        self.shown = without_password(location)

    @property
    def is_url(self) -> bool:
        """Whether the log is a PostgreSQL database (else a SQLite file or memory)."""
        return self._full.startswith(_URL_SCHEMES)

    def reopen_with(self) -> str:
        """The full location, password included: only to open the same log again."""
        return self._full

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"LogLocation({self.shown!r})"
