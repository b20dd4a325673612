"""The client's history of operations, Jepsen style (oracle O1).

Before each operation the client appends ``invoke`` (with a fresh token carried inside
the operation's payload), and after the engine acknowledges it ``ok`` (or ``fail`` with
the error). Every line is written with one ``write`` on an ``O_APPEND`` descriptor and
fsync'd, so what the history says was acknowledged really was. An ``invoke`` with no
answer (the process died) is ``info``: its outcome is unknown and either is allowed.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

__all__ = ["History", "Op", "read_history"]


class Op(NamedTuple):
    op: str  # start | send | approve | reject | set_state
    key: str  # what it is about (a workflow id, or "<wid>/<type>/<j>")
    token: str  # unique per invocation; found in the logged payload if it landed
    run: str
    outcome: str  # ok | fail | info
    error: str


class History:
    def __init__(self, path: str, run: str) -> None:
        self.path = path
        self.run = run
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def close(self) -> None:
        os.close(self.fd)

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())
        os.fsync(self.fd)

    def invoke(self, op: str, key: str, token: str) -> None:
        self._write({"type": "invoke", "op": op, "key": key, "token": token, "run": self.run})

    def ok(self, token: str) -> None:
        self._write({"type": "ok", "token": token})

    def fail(self, token: str, error: BaseException) -> None:
        self._write({"type": "fail", "token": token,
                     "error": f"{type(error).__name__}: {error}"})


def read_history(path: str) -> list[Op]:
    """Every invoked operation with its outcome, in invocation order."""
    invoked: dict[str, dict[str, Any]] = {}
    answers: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # a torn last line: the process died while writing it
            record = json.loads(line)
            if record["type"] == "invoke":
                invoked[record["token"]] = record
            else:
                answers[record["token"]] = record
    out = []
    for token, record in invoked.items():
        answer = answers.get(token)
        outcome = "info" if answer is None else str(answer["type"])
        out.append(Op(record["op"], record["key"], token, record["run"], outcome,
                      "" if answer is None else str(answer.get("error", ""))))
    return out
