"""Read-only views of JSON data: what ``Agent.state`` hands out.

An agent's state is the fold of its log. Handing out the fold's own object would let an
in-place change (``agent.state["n"] = 1``) desynchronise memory, the projection and the
clients from the log, silently. A view is a deep copy whose dicts and lists refuse every
change with a ``TypeError`` saying to use ``set_state``; the agent makes one per state
change and every read shares it, so reads cost nothing however large the state is. The
views subclass ``dict`` and ``list``: equality, ``isinstance``, ``json``, msgspec,
``{**state, "n": 1}``, ``dict(state)`` and ``list(items)`` work unchanged (the last three
give plain, mutable containers), and ``copy.deepcopy`` gives a plain deep copy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

__all__ = ["ReadOnlyDict", "ReadOnlyList", "read_only"]

_REFUSAL = ("agent state is read-only: build a new value (e.g. {**agent.state, 'key': value} "
            "or copy.deepcopy(agent.state)) and pass it to set_state")


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(_REFUSAL)


class ReadOnlyDict(dict[Any, Any]):
    """A ``dict`` that refuses changes (a part of an agent's state)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __copy__(self) -> dict[Any, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[Any, Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[dict[Any, Any]], tuple[dict[Any, Any]]]:
        return (dict, (thaw(self),))


class ReadOnlyList(list[Any]):
    """A ``list`` that refuses changes (a part of an agent's state)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return thaw(self)  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return (list, (thaw(self),))


_CONTAINERS = (dict, list, tuple)
_LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes, datetime})


def _copy(value: Any, readonly: bool, reuse: tuple[Any, Any] | None = None) -> Any:
    """A deep copy of ``value`` (read-only or plain), as a loop: any depth, no recursion.

    Each container is copied whole in C (``dict(d)``, ``list(l)``); Python then visits
    only the entries that are containers themselves. ``reuse = (old value, its copy)``: a
    top-level entry of ``value`` that *is* the old value's under the same key keeps its
    copy (a merge changes a few keys of a big state).
    """
    if not isinstance(value, _CONTAINERS):
        return value
    make_dict, make_list = (ReadOnlyDict, ReadOnlyList) if readonly else (dict, list)

    def shell(inner: Any) -> Any:
        return make_dict(inner) if isinstance(inner, dict) else make_list(inner)

    old, old_copy = reuse if reuse is not None and type(reuse[0]) is dict else ({}, {})
    missing = object()
    root = shell(value)
    todo: list[Any] = [root]
    while todo:
        target = todo.pop()
        if isinstance(target, dict):
            if _LEAF_TYPES.issuperset(map(type, target.values())):
                continue  # nothing nested (most of a state's containers): copied in C
            for key, inner in [(k, v) for k, v in target.items() if isinstance(v, _CONTAINERS)]:
                if target is root and old.get(key, missing) is inner:
                    copy = old_copy[key]
                else:
                    copy = shell(inner)
                    todo.append(copy)
                dict.__setitem__(target, key, copy)
        elif not _LEAF_TYPES.issuperset(map(type, target)):
            for index, inner in enumerate(target):
                if isinstance(inner, _CONTAINERS):
                    copy = shell(inner)
                    list.__setitem__(target, index, copy)
                    todo.append(copy)
    return root


def read_only(value: Any, reuse: tuple[Any, Any] | None = None) -> Any:
    """A read-only deep copy of ``value`` (see the module docstring)."""
    return _copy(value, True, reuse)


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (read-only) value."""
    return _copy(value, False)
