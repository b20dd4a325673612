"""The fingerprint of a workflow class's code (replay.md R16).

A run stamps every event that begins a wait it may hibernate in with the fingerprint of
the code that ran it; on open, a hibernating workflow whose stamp differs from the
fingerprint of the class now registered is replayed at once (a divergence is found when
the log is opened, not when the timer fires), and one whose stamp matches is left asleep.

The fingerprint hashes the bytecode of every function the class defines or inherits from
a base outside ``eventwf`` (``run`` and its helper methods): their instructions, constants
(nested functions and lambdas included, docstrings too) and the names they use. Comments,
blank lines and line numbers do not count; a new Python version changes it (a harmless
extra check).
Code the class reaches outside itself (a module-level helper) is not covered: a change
there is found when the workflow wakes, as before.
"""

from __future__ import annotations

import hashlib
import types
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec

from eventwf.model.events import (
    Event,
    SleepStarted,
    StepAttemptFailed,
    WaitStarted,
    WorkflowWaiting,
)

__all__ = ["code_fingerprint", "matches", "restamp", "stamped"]

# The events that begin a wait a run may hibernate in: each carries the code's fingerprint.
_STAMPED = (SleepStarted, WaitStarted, StepAttemptFailed, WorkflowWaiting)


def stamped(items: Sequence[tuple[str, Event]], code: str) -> Sequence[tuple[str, Event]]:
    """``items`` with each event that begins a wait stamped with ``code``, the fingerprint
    of the code appending them, so opening the log can tell a sleeper's code changed."""
    if not code or not any(isinstance(event, _STAMPED) for _, event in items):
        return items
    return [(stream, msgspec.structs.replace(event, code=code)
             if isinstance(event, _STAMPED) else event) for stream, event in items]


def matches(event: Event, code: str) -> bool:
    """Whether ``event`` (a sleeper's last) was logged by the code ``code`` names."""
    return isinstance(event, _STAMPED) and event.code == code


def restamp(event: Event, code: str) -> bool:
    """Whether ``event`` (a run's last) began a wait under other code than ``code``: the
    run, replayed to that wait, logs that it waits again under this code."""
    return isinstance(event, _STAMPED) and event.code != code


def code_fingerprint(cls: type[Any]) -> str:
    """16 hex digits naming the code of ``cls`` (stable across processes); computed once
    per class (a class's methods are not expected to change after it is registered)."""
    code = _FINGERPRINTS.get(cls)
    if code is None:
        code = _FINGERPRINTS[cls] = _fingerprint(cls)
    return code


_FINGERPRINTS: weakref.WeakKeyDictionary[type[Any], str] = weakref.WeakKeyDictionary()


def _fingerprint(cls: type[Any]) -> str:
    digest = hashlib.sha256()
    for klass in cls.__mro__:
        if klass is object or klass.__module__.split(".")[0] == "eventwf":
            continue
        for name in sorted(vars(klass)):
            code = _code_of(vars(klass)[name])
            if code is not None:
                digest.update(f"{name}\0".encode())
                _feed(digest, code)
    return digest.hexdigest()[:16]


def _code_of(value: Any) -> types.CodeType | None:
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    elif isinstance(value, property):
        value = value.fget
    code = getattr(value, "__code__", None)
    return code if isinstance(code, types.CodeType) else None


def _feed(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update("\0".join(code.co_names + code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed(digest, const)
        else:
            digest.update(_const_text(const).encode())
    digest.update(b"\1")


def _const_text(const: Any) -> str:
    """A constant as text that does not depend on hash order (frozensets are sorted)."""
    if isinstance(const, frozenset):
        return "{" + ",".join(sorted(_const_text(item) for item in const)) + "}"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_text(item) for item in const) + ")"
    return repr(const)
