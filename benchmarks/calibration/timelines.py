"""Per-request router/worker timelines for the bench's requests, captured in-stream.

The router answers a streamed request that carries `x-splitserve-debug: 1` with one SSE
comment line before `[DONE]`: `: timeline {...}` (splitserve/router/serving_common.py
`timeline_comment`): route kind, the worker URL(s), the router's event times and each
worker's own timeline (engine arrival, first scheduled, first token; wall-clock
`time.time()`, comparable across processes on one machine). The bench client skips
comment lines, so `capture()` wraps the client's `_stream_one` for the duration of a run:
the request gets the header and the comment is kept, keyed by the record's index, with the
client's wall-clock send time. Nothing else about the request changes (the comment comes
after the last token, so no measured gap includes it).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

DEBUG_HEADER = "x-splitserve-debug"
COMMENT_PREFIX = ": timeline "


class _TeeResponse:
    def __init__(self, response: Any, sink: dict[str, Any]) -> None:
        self._response = response
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    async def aiter_lines(self) -> AsyncIterator[str]:
        async for line in self._response.aiter_lines():
            if line.startswith(COMMENT_PREFIX):
                with contextlib.suppress(json.JSONDecodeError):
                    self._sink["timeline"] = json.loads(line[len(COMMENT_PREFIX):])
            yield line


class _TeeClient:
    """Enough of httpx.AsyncClient for `_stream_one`: `stream(...)` with the debug header,
    its response's lines teed into `sink`."""

    def __init__(self, client: Any, sink: dict[str, Any]) -> None:
        self._client = client
        self._sink = sink

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, **kwargs: Any) -> AsyncIterator[_TeeResponse]:
        headers = {**(kwargs.pop("headers", None) or {}), DEBUG_HEADER: "1"}
        self._sink["client_send_wall_s"] = time.time()
        async with self._client.stream(method, url, headers=headers, **kwargs) as response:
            yield _TeeResponse(response, self._sink)


@contextlib.contextmanager
def capture() -> Iterator[dict[int, dict[str, Any]]]:
    """While open, every bench request's timeline lands in the yielded dict under its
    record index (a run's records are indexed 0..n-1)."""
    import splitserve.bench.client as bench_client

    original = bench_client._stream_one
    captured: dict[int, dict[str, Any]] = {}

    async def stream_one(client: Any, url: str, body: dict[str, Any], record: Any) -> None:
        sink: dict[str, Any] = {}
        captured[record.index] = sink
        await original(_TeeClient(client, sink), url, body, record)

    bench_client._stream_one = stream_one  # type: ignore[assignment]
    try:
        yield captured
    finally:
        bench_client._stream_one = original  # type: ignore[assignment]


def summarize(entry: dict[str, Any]) -> dict[str, Any] | None:
    """One request's timeline as seconds since the client sent it: where it was routed,
    and when the router, the worker and its engine saw it (None when nothing came back)."""
    tl = entry.get("timeline")
    sent = entry.get("client_send_wall_s")
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
