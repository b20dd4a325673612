"""``check_replay``: the read-only pre-deploy replay of unfinished workflows."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import eventwf
from tests import golden


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_check_reports_ok_divergence_and_orphans_without_writing(tmp_path: Path) -> None:
    good, bad = str(tmp_path / "good.db"), str(tmp_path / "bad.db")
    golden.load("in-flight.jsonl", good)
    golden.load("divergent.jsonl", bad)
    before = (_digest(good), _digest(bad))
    golden.LEDGER.clear()
    kwargs: dict[str, Any] = {"agents": [golden.ShopAgent], "workflows": {"ORDER": golden.Order}}
    [ok] = await eventwf.check_replay(good, **kwargs)
    [diverged] = await eventwf.check_replay(bad, **kwargs)
    [orphan] = await eventwf.check_replay(good, agents=[golden.ShopAgent],
                                          workflows={"OTHER": golden.Order})
    assert (ok.workflow_id, ok.verdict, ok.commands) == ("order-1", "ok", 3)
    assert diverged.verdict == "diverged" and "step.do('charge-card')" in (diverged.message or "")
    assert orphan.verdict == "orphan" and "ORDER" in (orphan.message or "")
    assert golden.LEDGER == []  # no step ran
    assert (_digest(good), _digest(bad)) == before  # the logs were only read
