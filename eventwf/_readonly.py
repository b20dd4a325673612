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


def _shell(value: Any, readonly: bool) -> Any:
    """An empty container of the kind ``value`` needs, or ``value`` itself (immutable)."""
    if isinstance(value, dict):
        return ReadOnlyDict() if readonly else {}
    if isinstance(value, list | tuple):
        return ReadOnlyList() if readonly else []
    return value


def _copy(value: Any, readonly: bool, reuse: tuple[Any, Any] | None = None) -> Any:
    """A deep copy of ``value`` (read-only or plain), as a loop: any depth, no recursion.

    ``reuse = (old value, its copy)``: a top-level value of ``value`` that *is* the old
    value's under the same key keeps its copy (a merge changes a few keys of a big state).
    """
    root = _shell(value, readonly)
    todo = [] if root is value else [(value, root)]
    old, old_copy = reuse if reuse is not None and type(reuse[0]) is dict else ({}, {})
    missing = object()
    while todo:
        source, target = todo.pop()
        if isinstance(target, dict):
            top = target is root
            for key, inner in source.items():
                if top and old.get(key, missing) is inner:
                    dict.__setitem__(target, key, old_copy[key])
                    continue
                copy = _shell(inner, readonly)
                dict.__setitem__(target, key, copy)
                if copy is not inner:
                    todo.append((inner, copy))
        else:
            for inner in source:
                copy = _shell(inner, readonly)
                list.append(target, copy)
                if copy is not inner:
                    todo.append((inner, copy))
    return root


def read_only(value: Any, reuse: tuple[Any, Any] | None = None) -> Any:
    """A read-only deep copy of ``value`` (see the module docstring)."""
    return _copy(value, True, reuse)


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a (read-only) value."""
    return _copy(value, False)
