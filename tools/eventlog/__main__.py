"""``python -m tools.eventlog PATH COMMAND``: the same tool as ``eventwf log PATH COMMAND``.

A thin shim over :func:`eventwf.logtool.cli.main`: the commands, options and exit statuses
are the installed command's (specs/tools.md).
"""

from __future__ import annotations

import logging
import sys

from eventwf.logtool.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(prog="python -m tools.eventlog"))
