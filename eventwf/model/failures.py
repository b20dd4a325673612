"""Exceptions to and from the log, so a replayed failure raises the same class and text.

Only classes whose module is already imported are rebuilt (log data never triggers an
import); anything else comes back as ``StepFailedError`` carrying the original name.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import msgspec

from eventwf.errors import StepFailedError
from eventwf.model.codec import roundtrip_value
from eventwf.model.events import ErrorInfo

__all__ = ["error_info", "rebuild_exception", "storable"]

_MAX_TRACEBACK = 8192


def storable(text: str) -> str:
    """``text`` as every store can hold it: a NUL (PostgreSQL text holds none) and a lone
    surrogate (no UTF-8 has one; ``os.fsdecode`` makes them) become backslash escapes
    (``\\x00``, ``\\udc80``). An error's text must be loggable, whatever its raiser put in."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _encodable(value: Any) -> Any:
    try:
        return roundtrip_value(value, "exception data", limit=65536)
    except ValueError:
        return None


def error_info(exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """What is logged for ``exc``: class path, text, args and attributes when encodable.

    A group (concurrent tasks failed, e.g. in a nursery of ``run``) holding one error is
    logged as that error; with several, its text names each one, not "Exceptions from
    Trio nursery (2 sub-exceptions)"."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        if len(leaves) == 1:
            return error_info(leaves[0], with_traceback=with_traceback)
        info = _error_info(exc, with_traceback)
        text = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in leaves)
        return msgspec.structs.replace(
            info, message=storable(f"{len(leaves)} errors in concurrent tasks: {text}"))
    return _error_info(exc, with_traceback)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


def _error_info(exc: BaseException, with_traceback: bool) -> ErrorInfo:
    cls = type(exc)
    args = _encodable(list(exc.args))
    attrs = {k: v for k, v in vars(exc).items() if not k.startswith("_")}
    attrs_value = _encodable(attrs) if attrs else None
    text = ""
    if with_traceback and exc.__traceback__ is not None:
        text = "".join(traceback.format_exception(exc, limit=12))[-_MAX_TRACEBACK:]
    return ErrorInfo(
        type=storable(f"{cls.__module__}.{cls.__qualname__}"),
        message=storable(str(exc)),
        args=args,
        traceback=storable(text),
        attrs=attrs_value,
    )


def rebuild_exception(info: ErrorInfo) -> BaseException:
    """An exception equal in class, args, text and public attributes to the logged one."""
    cls = _lookup(info.type)
    stand_in = StepFailedError(info.type, info.message)
    if cls is None:
        return stand_in
    try:
        exc = cls.__new__(cls, *(info.args or ()))
        exc.args = tuple(info.args) if info.args is not None else (info.message,)
        if info.attrs:
            exc.__dict__.update(info.attrs)
        text = str(exc)
    except Exception as failure:  # a class that cannot be rebuilt this way
        stand_in.__cause__ = failure
        return stand_in
    # logs written before ``storable`` may hold a NUL in the text itself
    return exc if info.message in (storable(text), text) else stand_in


def _lookup(path: str) -> type[BaseException] | None:
    module_name, _, qualname = path.rpartition(".")
    while module_name:
        module = sys.modules.get(module_name)
        if module is not None:
            target: Any = module
            for part in qualname.split("."):
                target = getattr(target, part, None)
            if isinstance(target, type) and issubclass(target, BaseException):
                return target
            return None
        # nested qualnames (Outer.Inner) put dots into the split point; move it left
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
    return None
