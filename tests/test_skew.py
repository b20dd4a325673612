"""The engine compares its clock with the database's (specs/postgres.md PG19): a skew
beyond a second is logged, at most every ten minutes, naming the cure."""

from __future__ import annotations

import logging
import time
import types

import pytest

import eventwf
from eventwf.runtime import clock as clock_module
from eventwf.runtime.skew import WARN_ABOVE_S, WARN_EVERY_S, SkewWatch
from tests.wfkit import TestAgent


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "from the database's" in r.getMessage()]


def test_a_skew_within_a_second_is_quiet_and_beyond_it_warns_at_most_every_ten_minutes(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventwf")
    watch = SkewWatch()
    watch.observe(10_900_000, 10_000_000, now=0.0)
    assert watch.skew_s == pytest.approx(0.9) and _warnings(caplog) == []
    watch.observe(8_000_000, 10_000_000, now=1.0)  # behind by two seconds
    assert watch.skew_s == pytest.approx(-2.0)
    assert _warnings(caplog) == [
        "this engine's clock is -2.0 s from the database's: a durable timer another engine "
        "resumes after a takeover moves by the difference between their clocks; keep the "
        "engines' hosts synchronised (NTP)"]
    watch.observe(8_000_000, 10_000_000, now=1.0 + WARN_EVERY_S - 1)
    assert len(_warnings(caplog)) == 1
    watch.observe(10_000_000 + int(WARN_ABOVE_S * 3e6), 10_000_000, now=1.0 + WARN_EVERY_S)
    assert len(_warnings(caplog)) == 2 and "+3.0 s" in _warnings(caplog)[1]


@pytest.mark.realtime  # the check runs only on the host's clock, not a MockClock's
@pytest.mark.parametrize("offset_s, warned", [(0.0, False), (3600.0, True)])
async def test_an_engine_whose_host_clock_is_off_says_so_at_its_first_lease_round(
        fresh_postgres_url: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, offset_s: float, warned: bool) -> None:
    caplog.set_level(logging.WARNING, logger="eventwf")
    shifted = types.SimpleNamespace(time=lambda: time.time() + offset_s)
    monkeypatch.setattr(clock_module, "time", shifted)  # only the engine's clock moves
    async with eventwf.open_engine(fresh_postgres_url, agents=[TestAgent]):
        pass
    found = _warnings(caplog)
    assert bool(found) is warned, found
    if warned:
        assert found[0].startswith("this engine's clock is +3600.")
