"""The log tool: inspect, verify, back up and time-travel an eventwf log.

Installed as ``eventwf log PATH COMMAND`` (and ``python -m tools.eventlog PATH COMMAND``
from a clone); every command has ``--help``. Requirements: specs/tools.md (V1-V19).
Modules, one job each:

- ``lookups`` / ``source``: opening a log read-only and reading rows in short, bounded
  batches, and the small lookups the commands make
- ``pgsource`` / ``pgverify``: the same reads, and ``verify``, on a PostgreSQL log
- ``render``: times, durations, values, tables and JSON lines
- ``listing``: ``streams``, ``show``, ``tail [--follow]``
- ``timeline`` / ``timeline_view``: ``workflow ID``
- ``agentstate``: ``agent CLASS NAME [--at POSITION]``
- ``stats``: ``stats``
- ``verify`` / ``verify_view``: ``verify``
- ``check``: ``check MODULE:FACTORY``
- ``export``: ``export`` and ``rebuild-projections``
- ``backup``: ``backup OUT``
- ``cli``: the parser and the exit statuses

It reads the SQLite file itself (specs/design.md D2b), read-only, so that it can name the
damage the store would refuse to open; the one command that writes the log,
``rebuild-projections``, goes through the store. A PostgreSQL log (a URL) is read through
the store's read-only reader (specs/tools.md V20).
"""
