"""A testing kit for your own workflows (``docs/guides/testing.md``).

- :func:`open_test_engine` / :class:`TestEngine`: an engine a test may restart mid-way
  (same log); under ``MockClock`` wall time follows the mock clock across the restart.
- :func:`wait_for_status`: wait for a workflow's status, failing with the status seen if
  it settles in another.
- :class:`CrashReplay` / :func:`check_crashes`: run workflows to their end, then crash
  them after every logged event (or at hypothesis-chosen ones), recover, and check the
  same outcome and that no logged step body ran twice.
- :func:`check_determinism`: replay a log's workflows against the code under test.

The pytest plugin (``eventwf.testing.plugin``, registered by entry point) gives the
fixtures ``eventwf_engine``, ``eventwf_options``, ``eventwf_path`` and ``eventwf_clock``,
and runs the ``async def`` tests that use them (or carry ``@pytest.mark.eventwf``)
under ``trio.testing.MockClock(autojump_threshold=0)``.
"""

from eventwf.testing.crashes import CrashReplay as CrashReplay
from eventwf.testing.crashes import check_crashes as check_crashes
from eventwf.testing.determinism import check_determinism as check_determinism
from eventwf.testing.harness import VIRTUAL_EPOCH as VIRTUAL_EPOCH
from eventwf.testing.harness import TestEngine as TestEngine
from eventwf.testing.harness import open_test_engine as open_test_engine
from eventwf.testing.harness import virtual_wall as virtual_wall
from eventwf.testing.harness import wait_for_status as wait_for_status
from eventwf.testing.ledger import StepKey as StepKey
from eventwf.testing.ledger import StepLedger as StepLedger
from eventwf.testing.session import Outcome as Outcome
from eventwf.testing.session import Start as Start
from eventwf.testing.session import approval as approval

__all__ = [
    "VIRTUAL_EPOCH",
    "CrashReplay",
    "Outcome",
    "Start",
    "StepKey",
    "StepLedger",
    "TestEngine",
    "approval",
    "check_crashes",
    "check_determinism",
    "open_test_engine",
    "virtual_wall",
    "wait_for_status",
]
