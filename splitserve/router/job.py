"""One client request as the relay carries it through the workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from splitserve.router.timeline import RequestTimeline


@dataclass
class Job:
    request_id: str
    prompt_ids: list[int]
    sampling: dict[str, Any]
    endpoint: str
    timeline: RequestTimeline
    num_output_tokens: int = 0
    last_token_s: float | None = None
    # The id workers see. A retry uses a fresh one: a worker may remember aborted ids
    # (to win the abort-before-admit race) and would refuse the old one.
    worker_request_id: str = ""
    touched: dict[str, set[str]] = field(default_factory=dict)
    # Workers counted as busy with this request in the pool (from routing until the end),
    # so that a burst of requests routed between two polls spreads over the workers.
    held_urls: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.worker_request_id = self.worker_request_id or self.request_id
