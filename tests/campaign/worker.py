"""A worker process: open the engine on a campaign's log and run or continue its plan.

``python -m tests.campaign.worker CONFIG_JSON`` (or a fork of :mod:`tests.campaign.zygote`).
Exit status: 0 when every workflow finished and every callback was delivered, 2 when it
stopped before that (``stop_after``), 3 when the log was held by another engine
(``LogLockedError``; the message is noted in the ledger), 1 on any other error (the
traceback is in ``<dir>/run-<pid>.log``). Faults named in the config are armed first.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import trio

from eventwf import faults
from eventwf.errors import LogLockedError

from .ledger import Ledger
from .workload import Config, session

__all__ = ["child"]


def child(cfg: Config) -> int:
    """The body of a worker process (its exit status)."""
    run = cfg.run or str(os.getpid())
    faults.disarm()
    for item in filter(None, cfg.fault.split(",")):
        point, nth, action = item.split(":", 2)
        faults.arm(point, int(nth), action)
    try:
        done = trio.run(session, cfg)
        if cfg.fault:
            ledger = Ledger(cfg.ledger)
            ledger.note(run, "HITS " + json.dumps(faults.hits(), sort_keys=True))
            ledger.close()
        return 0 if done else 2
    except LogLockedError as exc:
        ledger = Ledger(cfg.ledger)
        ledger.note(run, f"LOCKED {exc}")
        ledger.close()
        return 3
    except BaseException:
        traceback.print_exc()
        return 1


def main(argv: list[str]) -> int:
    cfg = Config.load(argv[1])
    log = os.open(os.path.join(cfg.dir, f"run-{os.getpid()}.log"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return child(cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
