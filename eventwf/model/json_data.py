"""JSON data (agents.md A7) and the depth of logged values (events.md E6).

Every value sent to clients or stored as JSON must be JSON data, checked once where it
enters; every value the log holds nests at most ``MAX_VALUE_DEPTH`` levels. Both walks are
loops, so any depth gets a ``ValueError`` (or an answer), never ``RecursionError``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from eventwf.model.values import shorten

__all__ = ["MAX_JSON_DEPTH", "MAX_VALUE_DEPTH", "check_json_data", "nested_deeper"]

MAX_JSON_DEPTH = 128
# Every value the log holds (params, results, payloads, state, outputs) is nested at most
# this deep: a deeper one decodes only while the stack is shallow, so a replay from a
# deeper stack could fail on a value that was logged fine (events.md E6).
MAX_VALUE_DEPTH = MAX_JSON_DEPTH
_JSON_SCALARS = frozenset({str, int, bool, type(None)})  # float is checked apart (finite)
_Where = tuple[Any, str | int] | None  # (the parent's where, key or index): a path, built lazily


def nested_deeper(value: object, max_depth: int = MAX_VALUE_DEPTH) -> bool:
    """Whether ``value`` nests containers deeper than ``max_depth`` (a loop, never a
    ``RecursionError``; it stops at the first container that deep)."""
    todo: list[tuple[Any, int]] = [(value, 0)]
    while todo:
        node, depth = todo.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple | set | frozenset):
            children = node
        else:
            continue
        if depth >= max_depth:
            return True
        todo.extend((child, depth + 1) for child in children
                    if isinstance(child, dict | list | tuple | set | frozenset))
    return False


def check_json_data(value: object, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """``ValueError`` naming where ``value`` is not JSON data that clients read as it is held.

    JSON data (agents.md A7): None, bool, int, finite float, str, list or tuple of JSON
    data, dict with str keys and JSON-data values, nested at most ``max_depth`` containers
    deep; also bytes and datetimes, which clients receive as base64 and RFC 3339 strings.
    Expects a value as the codec decodes it (exact builtin types). The walk is a loop, so
    any depth gets this error, never ``RecursionError``.
    """
    todo: list[tuple[Any, int, _Where]] = [(value, 0, None)]
    while todo:
        node, depth, where = todo.pop()
        kind = type(node)
        if kind is dict or kind is list or kind is tuple:
            if depth >= max_depth:
                raise ValueError(f"{what} is not JSON data: nested deeper than {max_depth} "
                                 f"levels at {_path(where)}")
            if kind is dict:
                for key, inner in node.items():
                    if type(key) is not str:
                        raise ValueError(
                            f"{what} is not JSON data: key {shorten(key)} "
                            f"({type(key).__name__}) at {_path(where)} is not a str (JSON "
                            "object keys are strings)")
                    if type(inner) not in _JSON_SCALARS:
                        todo.append((inner, depth + 1, (where, key)))
            else:
                todo.extend((inner, depth + 1, (where, index)) for index, inner in enumerate(node)
                            if type(inner) not in _JSON_SCALARS)
        elif kind is float:
            if not math.isfinite(node):
                raise ValueError(f"{what} is not JSON data: {node!r} at {_path(where)} (JSON "
                                 "has no NaN or Infinity)")
        elif kind not in _JSON_SCALARS and kind is not bytes and kind is not datetime:
            raise ValueError(f"{what} is not JSON data: {shorten(node)} "
                             f"({kind.__module__}.{kind.__qualname__}) at {_path(where)}")


def _path(where: _Where) -> str:
    """``$.a[3].b`` for a ``where`` chain (the root is ``$``); deep paths keep both ends."""
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f".{shorten(key, 40, quote=False)}")
    parts.reverse()
    if len(parts) > 8:
        parts[3:-4] = [f"…({len(parts) - 7} more)…"]
    return "$" + "".join(parts)
