"""Prometheus metrics of one router (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from splitserve.router.policies import ROUTE_KINDS
from splitserve.router.timeline import RequestTimeline

_LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
_BYTES_BUCKETS = tuple(float(2**p) for p in range(10, 34, 2))


class RouterMetrics:
    """TTFT, inter-token latency, end-to-end latency and queue time as the client sees them;
    KV transfer seconds/bytes as the decode worker reports them; decisions and outcomes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft_s = Histogram(
            "splitserve_router_time_to_first_token_seconds",
            "Router receipt to first token relayed.", buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.itl_s = Histogram(
            "splitserve_router_inter_token_latency_seconds",
            "Gap between consecutive token events relayed.", buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e_s = Histogram(
            "splitserve_router_e2e_request_latency_seconds",
            "Router receipt to the last event.", buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.queue_s = Histogram(
            "splitserve_router_queue_time_seconds",
            "Time the request waited in the first worker's queue (worker timeline queue_s).",
            buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.kv_transfer_s = Histogram(
            "splitserve_router_kv_transfer_seconds",
            "KV handoff duration reported by the decode worker.",
            buckets=_LATENCY_BUCKETS_S, registry=r,
        )
        self.kv_transfer_bytes = Histogram(
            "splitserve_router_kv_transfer_bytes",
            "KV handoff size reported by the decode worker.", buckets=_BYTES_BUCKETS, registry=r,
        )
        self.routing = Counter(
            "splitserve_router_routing_decisions",
            "Routing decisions by kind.", ["kind"], registry=r,
        )
        self.requests = Counter(
            "splitserve_router_requests",
            "Finished requests by endpoint and status.", ["endpoint", "status"], registry=r,
        )
        self.rejected = Counter(
            "splitserve_router_rejected_requests",
            "Requests answered with an HTTP error before any worker ran them, by status code.",
            ["code"], registry=r,
        )
        self.retries = Counter(
            "splitserve_router_retries",
            "Work redone: reason=kv_transfer (prefill again after a failed handoff), "
            "prefill_failed (decode worker ran it whole).", ["reason"], registry=r,
        )
        for kind in ROUTE_KINDS:
            self.routing.labels(kind=kind)
        for reason in ("kv_transfer", "prefill_failed"):
            self.retries.labels(reason=reason)

    def observe_finish(self, timeline: RequestTimeline) -> None:
        """End-to-end latency, plus queue time and KV transfer from the workers' timelines
        (first worker's `queue_s`; decode worker's `kv_transfer_s` / `kv_transfer_bytes`)."""
        now = timeline.mark("finished")
        self.e2e_s.observe(now - timeline.received_s)
        workers = timeline.worker_timelines
        first = workers.get("prefill") or workers.get("full") or {}
        decode = workers.get("decode") or {}
        for histogram, value in ((self.queue_s, first.get("queue_s")),
                                 (self.kv_transfer_s, decode.get("kv_transfer_s")),
                                 (self.kv_transfer_bytes, decode.get("kv_transfer_bytes"))):
            if isinstance(value, int | float) and not isinstance(value, bool):
                histogram.observe(float(value))

    def render(self) -> bytes:
        return generate_latest(self.registry)
