"""The run's mailbox (eventwf/model/mailbox.py): FIFO per type, reservations of concurrent
waits (replay.md S8, S8a, R14)."""

from __future__ import annotations

from eventwf.model.mailbox import Mailbox


def _box() -> Mailbox:
    box = Mailbox()
    box.receive(3, "a", "first", 10)
    box.receive(4, "b", "other", 11)
    box.receive(5, "a", "second", 12)
    return box


def test_buffered_gives_the_oldest_event_of_the_type_received_by_the_deadline() -> None:
    box = _box()
    assert box.buffered("a") == (3, "first", 10)
    assert box.buffered("a", received_by_us=10) == (3, "first", 10)
    assert box.buffered("a", received_by_us=9) is None  # S8a: received after the deadline
    assert box.buffered("c") is None


def test_a_reserved_event_is_not_offered_to_another_wait() -> None:
    box = _box()
    box.reserve(3)
    assert box.buffered("a") == (5, "second", 12)
    assert box.holds(3, "a")  # still held until its consumption is fed


def test_a_released_event_is_buffered_again_in_its_place() -> None:
    box = _box()
    box.reserve(3)
    box.reserve(5)
    box.release(5)
    box.release(3)
    assert box.buffered("a") == (3, "first", 10)
    box.reserve(3)
    assert box.buffered("a") == (5, "second", 12)


def test_taking_a_reserved_event_ends_its_reservation() -> None:
    box = _box()
    box.reserve(3)
    assert box.take(3) == ("a", "first", 10)
    box.release(3)  # its consumption was logged: nothing comes back
    assert not box.holds(3, "a")
    assert box.buffered("a") == (5, "second", 12)


def test_taking_an_unreserved_event_removes_it_from_its_queue() -> None:
    box = _box()
    assert box.take(5) == ("a", "second", 12)
    assert box.buffered("a") == (3, "first", 10)
    assert box.take(3) == ("a", "first", 10)
    assert box.buffered("a") is None
    assert box.buffered("b") == (4, "other", 11)


def test_holds_checks_the_type_too() -> None:
    box = _box()
    assert box.holds(4, "b") and not box.holds(4, "a") and not box.holds(9, "b")
