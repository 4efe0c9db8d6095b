"""Per-request timeline: router timestamps plus each worker's own `timeline` dict.

Kept for the last `capacity` requests so `GET /debug/requests/{id}` can answer
"where did my TTFT go?" for any recent request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestTimeline:
    request_id: str
    received_s: float = field(default_factory=time.time)
    route_kind: str | None = None
    workers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, float]] = field(default_factory=list)
    worker_timelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_output_tokens: int = 0

    def mark(self, name: str) -> float:
        now = time.time()
        self.events.append((name, now))
        return now

    def first(self, name: str) -> float | None:
        return next((t for n, t in self.events if n == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "received": self.received_s,
            "route_kind": self.route_kind,
            "workers": self.workers,
            "num_output_tokens": self.num_output_tokens,
            "events": [{"name": n, "t": t, "since_received_s": t - self.received_s}
                       for n, t in self.events],
            "worker_timelines": self.worker_timelines,
        }


class TimelineStore:
    """Bounded ring of recent timelines, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._items: OrderedDict[str, RequestTimeline] = OrderedDict()

    def add(self, timeline: RequestTimeline) -> None:
        self._items[timeline.request_id] = timeline
        self._items.move_to_end(timeline.request_id)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, request_id: str) -> RequestTimeline | None:
        return self._items.get(request_id)
