"""The PostgreSQL backend (issue 15): one engine per database in this version.

``store.PostgresStore`` implements ``eventwf.store.interface.LogStore``; ``sql`` holds the
statements of the whole design (specs/postgres.md), several engines included.
"""

from eventwf.store.postgres.store import PostgresStore as PostgresStore

__all__ = ["PostgresStore"]
