"""Async streaming client: sends requests on schedule, times every SSE chunk.

Works against any OpenAI-compatible server (ours, vLLM, ...). Each request streams with
`stream_options.include_usage` so token counts come from the server when it reports them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from splitserve.bench.records import RequestRecord


class BenchError(Exception):
    """A run cannot go on (server unreachable, bad answer to /v1/models): the CLI prints
    the message and exits non-zero, without a traceback."""


@dataclass(frozen=True)
class RequestSpec:
    """What to send: `prompt` is token ids (completions) or text (completions or chat)."""

    index: int
    scheduled_s: float
    prompt: list[int] | str
    input_len: int
    output_len: int
    is_long: bool = False


@dataclass(frozen=True)
class ServerInfo:
    model_ids: list[str]
    max_model_len: int | None


def base_url(url: str) -> str:
    """`http://h:p`, `http://h:p/` and `http://h:p/v1` all name the same server."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _client(timeout_s: float, max_connections: int = 1024) -> httpx.AsyncClient:
    # trust_env=False: a proxy from the environment must never sit between us and loopback.
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64),
        trust_env=False,
    )


async def probe_server(url: str, timeout_s: float = 10.0) -> ServerInfo:
    """GET /v1/models; raises BenchError with a one-line reason when that fails."""
    target = base_url(url) + "/v1/models"
    try:
        async with _client(timeout_s) as client:
            response = await client.get(target)
    except httpx.HTTPError as exc:
        raise BenchError(f"cannot reach server at {target}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise BenchError(f"{target} answered HTTP {response.status_code}: {response.text[:200]}")
    try:
        data = response.json()["data"]
        model_ids = [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError):
        raise BenchError(f"{target} did not answer an OpenAI model list") from None
    lens = [m.get("max_model_len") for m in data if isinstance(m.get("max_model_len"), int)]
    return ServerInfo(model_ids, lens[0] if lens else None)


def request_body(spec: RequestSpec, model: str, chat: bool) -> dict[str, Any]:
    """The JSON body: greedy, EOS ignored and max_tokens fixed so output length is ours."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": spec.output_len,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat:
        if not isinstance(spec.prompt, str):
            raise ValueError("chat requests need text prompts")
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    else:
        body["prompt"] = spec.prompt
    return body


def _chunk_text(obj: dict[str, Any]) -> str:
    choices = obj.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return str((choice.get("delta") or {}).get("content") or "")
    return str(choice.get("text") or "")


# splitserve's router answers a streamed request carrying this header with one SSE comment,
# `: timeline {json}`, after the last token (ignored by clients, never part of a gap).
DEBUG_HEADER = "x-splitserve-debug"
TIMELINE_PREFIX = ": timeline "


async def _stream_one(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], record: RequestRecord,
    capture_timeline: bool = False,
) -> None:
    """Fills `record` from one streamed response; raises on transport/HTTP errors."""
    headers = {DEBUG_HEADER: "1"} if capture_timeline else None
    if capture_timeline:
        record.send_wall_s = time.time()
    start = time.perf_counter()
    last = start
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")
            raise _RequestFailed(f"HTTP {response.status_code}: {text[:200]}")
        finished = False
        async for line in response.aiter_lines():
            if capture_timeline and line.startswith(TIMELINE_PREFIX):
                try:
                    record.timeline = json.loads(line[len(TIMELINE_PREFIX):])
                except json.JSONDecodeError:
                    pass  # a debug aid: a bad one is dropped, the request still counts
                continue
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                finished = True
                break
            now = time.perf_counter()
            try:
                obj = json.loads(payload)
            except json.JSONDecodeError:
                raise _RequestFailed(f"bad SSE payload: {payload[:100]}") from None
            if "error" in obj:
                raise _RequestFailed(f"server error: {json.dumps(obj['error'])[:200]}")
            if _chunk_text(obj):
                if record.num_chunks == 0:
                    record.ttft_s = now - start
                else:
                    record.itl_s.append(now - last)
                last = now
                record.num_chunks += 1
            usage = obj.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                record.output_len = int(usage["completion_tokens"])
                record.output_len_source = "usage"
                if usage.get("prompt_tokens") is not None:
                    record.input_len = int(usage["prompt_tokens"])
    if not finished:
        raise _RequestFailed("stream ended without [DONE]")
    if record.num_chunks == 0:
        raise _RequestFailed("stream carried no output")
    record.e2e_s = time.perf_counter() - start
    if record.output_len_source != "usage":
        record.output_len = record.num_chunks


class _RequestFailed(Exception):
    pass


@dataclass(frozen=True)
class ClientConfig:
    url: str
    model: str
    chat: bool = False
    timeout_s: float = 300.0
    duration_s: float | None = None
    max_concurrency: int | None = None
    # ask splitserve's router for each request's timeline (RequestRecord.timeline)
    capture_timeline: bool = False

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {self.max_concurrency}")


async def run_requests(
    config: ClientConfig,
    specs: list[RequestSpec],
    on_done: Callable[[RequestRecord], None] | None = None,
) -> tuple[list[RequestRecord], float]:
    """Sends each spec at its `scheduled_s` (no new sends after `duration_s`), waits for
    all, and returns the records (unsent ones have send_s None) and the wall time from
    the first send to the last completion."""
    path = "/v1/chat/completions" if config.chat else "/v1/completions"
    target = base_url(config.url) + path
    limit = asyncio.Semaphore(config.max_concurrency or max(1, len(specs)))
    records = [
        RequestRecord(s.index, s.scheduled_s, s.input_len, s.output_len, s.is_long)
        for s in specs
    ]

    async def one(client: httpx.AsyncClient, spec: RequestSpec, record: RequestRecord) -> None:
        async with limit:
            record.send_s = time.perf_counter() - t0
            try:
                body = request_body(spec, config.model, config.chat)
                await asyncio.wait_for(
                    _stream_one(client, target, body, record, config.capture_timeline),
                    config.timeout_s
                )
            except asyncio.TimeoutError:
                record.error = f"timeout after {config.timeout_s:g} s"
            except _RequestFailed as exc:
                record.error = str(exc)
            except httpx.ConnectError as exc:
                record.error = f"connect error: {exc}"
            except httpx.HTTPError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
        if on_done is not None:
            on_done(record)

    async with _client(config.timeout_s) as client:
        t0 = time.perf_counter()
        tasks = []
        for spec, record in zip(specs, records, strict=True):
            delay = spec.scheduled_s - (time.perf_counter() - t0)
            if config.duration_s is not None and spec.scheduled_s >= config.duration_s:
                break
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(client, spec, record)))
        await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - t0
    return records, max(wall_s, 1e-9)
