"""``check MODULE:FACTORY``: replay every unfinished workflow against the current code (V16).

``FACTORY`` names, in an importable module, a dict or a callable (sync or async) that
returns a dict of ``open_engine`` keyword arguments with at least ``agents`` and
``workflows``; ``MODULE`` is imported from ``sys.path`` and, failing that, from the
current directory (so ``eventwf log app.db check myapp:options`` works from the
project). The log is handed to ``eventwf.check_replay``, which replays a copy of an SQLite
file, or a PostgreSQL database in place through a read-only session (V20), without
running a step; the log itself is only read.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec

from eventwf.engine import check_replay

from .render import Output
from .source import ToolError

__all__ = ["FAILING", "check", "load_factory"]

FAILING = frozenset({"diverged", "corrupt", "error"})
_VERDICT_ORDER = ("ok", "diverged", "corrupt", "error", "orphan")


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != module_name.split(".")[0] or here in sys.path:
            raise ToolError(f"cannot import {module_name!r}: {exc}") from exc
        # the module is looked for in the current directory too, as `python -m` does: an
        # installed `eventwf` command starts with its own bin directory on sys.path
        sys.path.insert(0, here)
        return _import(module_name)
    except Exception as exc:
        raise ToolError(f"importing {module_name!r} raised {type(exc).__name__}: "
                        f"{exc}") from exc


async def load_factory(spec: str) -> dict[str, Any]:
    """The ``agents`` and ``workflows`` that ``MODULE:NAME`` gives."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ToolError(f"name the engine factory as MODULE:NAME (for example "
                        f"myapp.engine:engine_options), not {spec!r}")
    target: Any = _import(module_name)
    for part in name.split("."):
        if not hasattr(target, part):
            raise ToolError(f"{module_name!r} has no attribute {name!r}")
        target = getattr(target, part)
    value = target() if callable(target) and not isinstance(target, Mapping) else target
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, Mapping):
        raise ToolError(f"{spec} must be (or return) a dict of open_engine keyword arguments, "
                        f"not {type(value).__name__}")
    missing = [key for key in ("agents", "workflows") if key not in value]
    if missing:
        raise ToolError(f"{spec} gives no {' or '.join(missing)}: the check needs the agent "
                        "classes and workflow bindings you pass to open_engine")
    return {"agents": value["agents"], "workflows": value["workflows"]}


@contextmanager
def _quiet_engine() -> Iterator[None]:
    """The engine's warnings are about the check's private copy; the verdicts say it all."""
    logger = logging.getLogger("eventwf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def check(path: str, spec: str, out: Output, *, timeout: float = 60.0,
                strict: bool = False) -> int:
    """One verdict per unfinished workflow; 1 if any is diverged, corrupt or error."""
    options = await load_factory(spec)
    try:
        with _quiet_engine():
            verdicts = await check_replay(path, timeout=timeout, **options)
    except (ValueError, TypeError) as exc:
        raise ToolError(f"{spec}: {exc}") from exc
    counts = {verdict: 0 for verdict in _VERDICT_ORDER}
    for result in verdicts:
        counts[result.verdict] = counts.get(result.verdict, 0) + 1
    failing = FAILING | ({"orphan"} if strict else set())
    status = 1 if any(counts.get(v) for v in failing) else 0
    if out.json:
        for result in verdicts:
            out.record({"record": "check", **msgspec.structs.asdict(result)})
        out.record({"record": "summary", "unfinished": len(verdicts), "verdicts": counts,
                    "exit": status})
        return status
    out.table(["WORKFLOW", "BINDING", "STATUS", "VERDICT", "COMMANDS", "MESSAGE"],
              [[r.workflow_id, r.workflow_name, r.status, r.verdict, str(r.commands),
                r.message or ""] for r in verdicts])
    summary = ", ".join(f"{n} {verdict}" for verdict, n in counts.items() if n) or "nothing"
    out.line(f"{len(verdicts)} unfinished workflow(s): {summary}"
             + ("" if status == 0 else " -> NOT safe to deploy this code against this log"))
    return status
