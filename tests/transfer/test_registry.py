"""The release-once state machine, driven directly without sockets."""

from __future__ import annotations

import threading
import time

import pytest

from splitserve.transfer import Busy, Expired, NotFound
from splitserve.transfer.registry import Entry, Registry


def make_entry(request_id: str = "r", expires_in_s: float = 60.0) -> Entry:
    return Entry(request_id, 1, 4, lambda layer: memoryview(b"abcd"), time.time() + expires_in_s)


def test_checkout_states():
    calls: list[tuple[str, str]] = []
    registry = Registry(lambda rid, reason: calls.append((rid, reason)))
    with pytest.raises(NotFound):
        registry.checkout("r")
    registry.add(make_entry())
    entry = registry.checkout("r")
    with pytest.raises(Busy):
        registry.checkout("r")
    registry.checkin(entry, acked=False)
    assert calls == [] and len(registry) == 1
    entry = registry.checkout("r")
    registry.checkin(entry, acked=True)
    assert calls == [("r", "ack")] and len(registry) == 0


def test_expired_entry_cannot_be_checked_out_and_expires_once():
    calls: list[tuple[str, str]] = []
    registry = Registry(lambda rid, reason: calls.append((rid, reason)))
    registry.add(make_entry(expires_in_s=-1))
    with pytest.raises(Expired):
        registry.checkout("r")
    assert registry.expire_due() is None
    assert registry.expire_due() is None
    assert calls == [("r", "expired")]


def test_release_requested_during_a_pull_happens_at_checkin_exactly_once():
    calls: list[tuple[str, str]] = []
    registry = Registry(lambda rid, reason: calls.append((rid, reason)))
    registry.add(make_entry())
    entry = registry.checkout("r")
    assert registry.release("r", "unregistered")
    assert registry.release("r", "expired")
    assert calls == []
    with pytest.raises(NotFound):
        registry.checkout("r")
    registry.checkin(entry, acked=False)
    assert calls == [("r", "unregistered")]
    assert registry.release("r", "unregistered") is False


def test_racing_releases_fire_once():
    calls: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(rid: str, reason: str) -> None:
        with lock:
            calls.append((rid, reason))

    registry = Registry(record)
    for index in range(50):
        registry.add(make_entry(f"r{index}"))
    reasons = ["ack", "expired", "unregistered", "shutdown"]
    threads = [
        threading.Thread(target=lambda r=reason: [registry.release(f"r{i}", r) for i in range(50)])
        for reason in reasons
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(rid for rid, _ in calls) == sorted(f"r{i}" for i in range(50))


def test_a_raising_callback_does_not_break_the_registry():
    def explode(rid: str, reason: str) -> None:
        raise RuntimeError("engine bug")

    registry = Registry(explode)
    registry.add(make_entry())
    assert registry.release("r", "unregistered") is True
    assert len(registry) == 0
