"""``ScratchStore``: a check's writes are read back from memory and never reach the log."""

from __future__ import annotations

import hashlib
from pathlib import Path

from eventwf.model.agent_fold import AgentSummary
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import AgentStateSet, agent_stream
from eventwf.runtime.scratch import ScratchStore
from eventwf.store import PendingRow, open_store
from tests.eventlog_kit import build


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_writes_are_read_back_and_the_log_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    build(path)
    before = _digest(path)
    store = ScratchStore(open_store(str(path), readonly=True))
    try:
        stream = agent_stream("TestAgent", "alice")
        logged = store.read_stream(stream)
        head, version = store.head, store.stream_head(stream)
        event = AgentStateSet(state={"count": 99})
        first = store.commit([PendingRow(stream, version + 1, 7, event_type(event),
                                         encode_event(event))],
                             agents=[AgentSummary("TestAgent", "alice", {"count": 99}, True)])
        assert (first, store.head, store.written) == ([head + 1], head + 1, 1)
        assert store.stream_head(stream) == version + 1
        read = store.read_stream(stream)
        assert read[:-1] == logged and read[-1].event == event
        assert store.read_stream(stream, after_position=head) == read[-1:]
        summary = store.load_agent("TestAgent", "alice")
        assert summary is not None and summary.state == {"count": 99}
    finally:
        store.close()
    assert _digest(path) == before
