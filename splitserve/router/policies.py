"""Routing policies: pure functions over a snapshot of worker load.

`choose(snapshot, request, config, rr)` picks where a request runs:

- `colocated`: there are no decode workers (or none healthy) but a mixed worker is; the
  mixed worker runs the whole request (`mode=full`).
- `local_prefill_short`: the prompt has at most `short_prompt_len` tokens; moving its KV
  would cost more than prefilling it where it decodes, so the decode worker runs it whole.
- `local_prefill_saturated`: every healthy prefill worker has at least
  `saturated_num_waiting` queued requests (or none is healthy); the decode worker runs it.
- `disaggregated`: prefill on a prefill worker, KV moves, decode on a decode worker.

Within a pool, `least_loaded` orders by requests in the system, then by KV usage;
`round_robin` cycles over the healthy workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["prefill", "decode", "mixed"]
RouteKind = Literal["disaggregated", "local_prefill_short", "local_prefill_saturated", "colocated"]
ROUTE_KINDS: tuple[RouteKind, ...] = (
    "disaggregated",
    "local_prefill_short",
    "local_prefill_saturated",
    "colocated",
)


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as last polled. `num_inflight` counts requests this router has sent to it
    and not yet seen finish; it covers the gap between polls."""

    url: str
    role: Role
    healthy: bool
    num_waiting: int = 0
    num_running: int = 0
    num_free_blocks: int = 0
    num_used_blocks: int = 0
    num_inflight: int = 0

    @property
    def kv_usage(self) -> float:
        total = self.num_free_blocks + self.num_used_blocks
        return self.num_used_blocks / total if total else 0.0

    @property
    def num_requests(self) -> int:
        return max(self.num_waiting + self.num_running, self.num_inflight)


@dataclass(frozen=True)
class RouteRequest:
    num_prompt_tokens: int


@dataclass(frozen=True)
class PolicyConfig:
    policy: Literal["least_loaded", "round_robin"] = "least_loaded"
    short_prompt_len: int = 64
    saturated_num_waiting: int = 8

    def __post_init__(self) -> None:
        if self.policy not in ("least_loaded", "round_robin"):
            raise ValueError(f"unknown routing policy {self.policy!r}")
        if self.short_prompt_len < 0 or self.saturated_num_waiting < 0:
            raise ValueError("short_prompt_len and saturated_num_waiting must be >= 0")


@dataclass(frozen=True)
class Route:
    prefill_url: str | None
    decode_url: str
    kind: RouteKind


class NoWorkerError(Exception):
    """No healthy worker of a role the request needs."""

    def __init__(self, role: str) -> None:
        super().__init__(f"no healthy {role} worker available")
        self.role = role


class RoundRobin:
    """Cycles over whichever workers are healthy at each call; one instance per pool."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, workers: Sequence[WorkerLoad]) -> WorkerLoad:
        if not workers:
            raise ValueError("round robin over an empty pool")
        ordered = sorted(workers, key=lambda w: w.url)
        worker = ordered[self._next % len(ordered)]
        self._next += 1
        return worker


def least_loaded(workers: Sequence[WorkerLoad]) -> WorkerLoad:
    """Fewest requests in the system, then lowest KV usage, then URL (deterministic)."""
    if not workers:
        raise ValueError("least_loaded over an empty pool")
    return min(workers, key=lambda w: (w.num_requests, w.kv_usage, w.url))


def healthy(snapshot: Sequence[WorkerLoad], role: Role) -> list[WorkerLoad]:
    return [w for w in snapshot if w.role == role and w.healthy]


def prefill_pool_saturated(prefill: Sequence[WorkerLoad], num_waiting: int) -> bool:
    """True when no prefill worker could start this prompt soon."""
    if not prefill:
        return True
    return num_waiting > 0 and all(w.num_waiting >= num_waiting for w in prefill)


def conditional_kind(
    num_prompt_tokens: int, prefill: Sequence[WorkerLoad], config: PolicyConfig
) -> RouteKind:
    """Disaggregate, or prefill on the decode worker (and why)."""
    if num_prompt_tokens <= config.short_prompt_len:
        return "local_prefill_short"
    if prefill_pool_saturated(prefill, config.saturated_num_waiting):
        return "local_prefill_saturated"
    return "disaggregated"


@dataclass
class Pickers:
    """Per-pool round-robin state (unused by least_loaded)."""

    prefill: RoundRobin
    decode: RoundRobin
    mixed: RoundRobin

    @classmethod
    def new(cls) -> Pickers:
        return cls(RoundRobin(), RoundRobin(), RoundRobin())


def _pick(workers: Sequence[WorkerLoad], config: PolicyConfig, rr: RoundRobin) -> WorkerLoad:
    return rr.pick(workers) if config.policy == "round_robin" else least_loaded(workers)


def choose(
    snapshot: Sequence[WorkerLoad],
    request: RouteRequest,
    config: PolicyConfig,
    pickers: Pickers,
) -> Route:
    """Route one request; raises NoWorkerError when no decode-capable worker is healthy."""
    decode = healthy(snapshot, "decode")
    if not decode:
        mixed = healthy(snapshot, "mixed")
        if not mixed:
            has_decode = any(w.role == "decode" for w in snapshot)
            raise NoWorkerError("decode" if has_decode else "mixed")
        return Route(None, _pick(mixed, config, pickers.mixed).url, "colocated")
    prefill = healthy(snapshot, "prefill")
    kind = conditional_kind(request.num_prompt_tokens, prefill, config)
    decode_url = _pick(decode, config, pickers.decode).url
    if kind != "disaggregated":
        return Route(None, decode_url, kind)
    return Route(_pick(prefill, config, pickers.prefill).url, decode_url, kind)


def alternative_prefill(
    snapshot: Sequence[WorkerLoad], failed_url: str, config: PolicyConfig, pickers: Pickers
) -> str:
    """Prefill worker for a retry: another healthy one if any, else the same one again."""
    others = [w for w in healthy(snapshot, "prefill") if w.url != failed_url]
    return _pick(others, config, pickers.prefill).url if others else failed_url
