"""The web console, ``eventwf console PATH_OR_URL``: workflows, agents and the log in a browser.

Read-only on a SQLite log file or a PostgreSQL database, beside running engines. ``tail``:
the filtered, followed tail; ``views``: what each page shows, read through the log tool;
``html``: those records as escaped HTML; ``site``: the HTTP routes on trio + h11;
``run``: ``serve_console`` and the command; ``mount`` and ``controls``: the console inside
``eventwf.serve``. Requirements: specs/console.md.
"""

from eventwf.apps.console.run import ConsoleServer as ConsoleServer
from eventwf.apps.console.run import main as main
from eventwf.apps.console.run import serve_console as serve_console

__all__ = ["ConsoleServer", "main", "serve_console"]
