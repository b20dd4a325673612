"""RFC 7396 JSON Merge Patch, as a pure function of two JSON values.

Used by the agent fold (``agent.state_patched``) so a patch applies to the state as it is
when it commits: concurrent workflows patching different keys compose instead of
overwriting each other as a shallow merge does. Nothing here mutates its inputs; parts of
the target the patch does not touch are shared with the result.
"""

from __future__ import annotations

from typing import Any

__all__ = ["merge_patch"]


def merge_patch(target: Any, patch: Any) -> Any:
    """The result of applying ``patch`` to ``target`` (RFC 7396 section 2).

    An object patch merges key by key into ``target`` (a non-object target counts as
    ``{}``): ``None`` removes a key, an object merges recursively, anything else replaces.
    A patch that is not an object replaces the target whole.
    """
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        elif isinstance(value, dict):
            result[name] = merge_patch(result.get(name), value)
        else:
            result[name] = value
    return result
