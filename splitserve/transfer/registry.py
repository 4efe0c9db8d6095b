"""The source's table of held KV: lease, in-flight pulls, and release exactly once.

An entry is registered (HELD at the engine), may be checked out by one pull at a time,
and is released once, on the first of: ack by the sink, lease expiry, unregister, server
close. A release requested while a pull is reading the entry's buffers is deferred until
that pull checks the entry back in: the engine must not reuse blocks we are still sending.
`on_release(request_id, reason)` runs outside the lock, exactly once per entry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from splitserve.transfer.errors import Busy, Expired, NotFound
from splitserve.transfer.shm import ShmExport

logger = logging.getLogger(__name__)

ReleaseCallback = Callable[[str, str], None]
# Release reasons passed to on_release.
ACK, EXPIRED, UNREGISTERED, SHUTDOWN = "ack", "expired", "unregistered", "shutdown"


@dataclass
class Entry:
    request_id: str
    num_layers: int
    bytes_per_layer: int
    read_layer: Callable[[int], memoryview]
    expires_at: float
    shm: ShmExport | None = None
    shm_corrupted: bool = False
    busy: bool = False
    pending_reason: str | None = None
    released: bool = field(default=False)


class Registry:
    def __init__(self, on_release: ReleaseCallback | None) -> None:
        self._on_release = on_release
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def add(self, entry: Entry) -> None:
        with self._lock:
            if entry.request_id in self._entries:
                raise ValueError(f"request {entry.request_id!r} is already registered")
            self._entries[entry.request_id] = entry
            self.changed.notify_all()

    def checkout(self, request_id: str) -> Entry:
        """Reserve the entry for one pull; NotFound / Expired / Busy otherwise."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                raise NotFound(f"no KV held for request {request_id!r}")
            if entry.pending_reason == EXPIRED or time.time() >= entry.expires_at:
                raise Expired(f"KV lease of request {request_id!r} has expired")
            if entry.pending_reason is not None:
                raise NotFound(f"KV of request {request_id!r} is being released")
            if entry.busy:
                raise Busy(f"request {request_id!r} is already being pulled")
            entry.busy = True
            return entry

    def checkin(self, entry: Entry, *, acked: bool) -> ShmExport | None:
        """End a pull; release on ack, or carry out a release deferred during the pull.

        On ack the entry's shared-memory export is handed back instead of unlinked, so the
        caller can confirm to the sink first and unlink off the critical path.
        """
        with self._lock:
            entry.busy = False
            reason = ACK if acked else entry.pending_reason
            if reason is None and time.time() >= entry.expires_at:
                reason = EXPIRED
            victim = self._pop_locked(entry.request_id) if reason else None
        detached = None
        if victim is not None and reason is not None:
            if acked:
                detached, victim.shm = victim.shm, None
            self._fire(victim, reason)
        return detached

    def release(self, request_id: str, reason: str) -> bool:
        """Release now, or as soon as an in-flight pull ends. False if not registered."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return False
            if entry.busy:
                if entry.pending_reason is None:
                    entry.pending_reason = reason
                return True
            victim = self._pop_locked(request_id)
        if victim is not None:
            self._fire(victim, reason)
        return True

    def expire_due(self) -> float | None:
        """Release every idle entry past its lease; return the next deadline (unix s)."""
        now = time.time()
        with self._lock:
            due = [e.request_id for e in self._entries.values() if e.expires_at <= now]
            deadlines = [e.expires_at for e in self._entries.values() if e.expires_at > now]
        for request_id in due:
            self.release(request_id, EXPIRED)
        return min(deadlines, default=None)

    def release_all(self, reason: str) -> None:
        with self._lock:
            request_ids = list(self._entries)
        for request_id in request_ids:
            self.release(request_id, reason)

    def _pop_locked(self, request_id: str) -> Entry | None:
        entry = self._entries.pop(request_id, None)
        if entry is None or entry.released:
            return None
        entry.released = True
        self.changed.notify_all()
        return entry

    def _fire(self, entry: Entry, reason: str) -> None:
        if entry.shm is not None:
            try:
                entry.shm.unlink()
            except OSError:
                logger.exception("unlinking the segment of %r failed", entry.request_id)
        if self._on_release is None:
            return
        try:
            self._on_release(entry.request_id, reason)
        except Exception:
            logger.exception("on_release(%r, %r) raised", entry.request_id, reason)
