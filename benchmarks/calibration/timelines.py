"""Per-request router/worker timelines of the bench's requests, as seconds since sending.

The bench client, with `capture_timeline=True` (splitserve/bench/client.py), sends the
router's debug header and keeps the one SSE comment the router answers with after the last
token (`: timeline {...}`, splitserve/router/serving_common.py `timeline_comment`): route
kind, the worker URL(s), the router's event times and each worker's own timeline (engine
arrival, first scheduled, first token; wall-clock `time.time()`, comparable across
processes on one machine), plus the client's wall-clock send time. Nothing else about the
request changes (the comment comes after the last token, so no measured gap includes it).
"""

from __future__ import annotations

from typing import Any


def summarize(tl: dict[str, Any] | None, sent: float | None) -> dict[str, Any] | None:
    """One request's timeline as seconds since the client sent it: where it was routed,
    and when the router, the worker and its engine saw it (None when nothing came back)."""
    if not tl or sent is None:
        return None
    out: dict[str, Any] = {"route_kind": tl.get("route_kind"), "workers": tl.get("workers"),
                           "router_received_s": tl["received"] - sent}
    for ev in tl.get("events", []):
        out.setdefault(f"router_{ev['name']}_s", ev["t"] - sent)
    for role, wt in (tl.get("worker_timelines") or {}).items():
        for key, value in wt.items():
            if key.endswith("_s") or key.endswith("_bytes"):  # durations, sizes
                out[f"{role}.{key}"] = value
            elif isinstance(value, (int, float)):
                out[f"{role}.{key}_s"] = value - sent
    return out
