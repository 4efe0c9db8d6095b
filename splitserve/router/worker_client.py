"""Typed client for the worker internal API (see docs/architecture.md, "Worker internal API").

Every call carries `X-Splitserve-Secret`. `/internal/generate` answers an NDJSON stream;
each line is parsed into one of the event dataclasses below and anything else is an error
(never eval'd, never trusted beyond its declared fields).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

SECRET_HEADER = "X-Splitserve-Secret"


class WorkerError(Exception):
    """The worker answered an error (HTTP status or an `error` event) or broke the protocol."""

    def __init__(self, url: str, code: int, message: str) -> None:
        super().__init__(f"worker {url}: {message} (code {code})")
        self.url = url
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TokenEvent:
    token_ids: list[int]
    text: str
    # Aligned with token_ids: {"logprob": float, "top_logprobs": [{"token_id", "logprob"}]}.
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class HandoffEvent:
    record: dict[str, Any]
    timeline: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FinishEvent:
    finish_reason: str
    num_prompt_tokens: int
    num_output_tokens: int
    timeline: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ErrorEvent:
    code: int
    message: str


WorkerEvent = TokenEvent | HandoffEvent | FinishEvent | ErrorEvent


def parse_event(line: str | bytes) -> WorkerEvent:
    """One NDJSON line -> event; ValueError names what is wrong."""
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError("worker event is not a JSON object")
    kind = raw.get("type")
    if kind == "token":
        ids = raw.get("token_ids")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ValueError("token event needs token_ids: list[int]")
        logprobs = raw.get("logprobs")
        if logprobs is not None and (not isinstance(logprobs, list) or len(logprobs) != len(ids)):
            raise ValueError("token event logprobs must align with token_ids")
        return TokenEvent(ids, str(raw.get("text", "")), logprobs)
    if kind == "handoff":
        record = raw.get("record")
        if not isinstance(record, dict):
            raise ValueError("handoff event needs a record object")
        timeline = raw.get("timeline") or {}
        return HandoffEvent(record, timeline if isinstance(timeline, dict) else {})
    if kind == "finish":
        timeline = raw.get("timeline") or {}
        if not isinstance(timeline, dict):
            raise ValueError("finish event timeline must be an object")
        return FinishEvent(
            finish_reason=str(raw.get("finish_reason", "stop")),
            num_prompt_tokens=int(raw.get("num_prompt_tokens", 0)),
            num_output_tokens=int(raw.get("num_output_tokens", 0)),
            timeline=timeline,
        )
    if kind == "error":
        return ErrorEvent(int(raw.get("code", 500)), str(raw.get("message", "worker error")))
    raise ValueError(f"unknown worker event type {kind!r}")


class WorkerClient:
    """Async calls to workers over one shared httpx client."""

    def __init__(self, client: httpx.AsyncClient, secret: str, timeout_s: float) -> None:
        self._client = client
        self._headers = {SECRET_HEADER: secret}
        self._timeout_s = timeout_s

    async def get_json(self, url: str, path: str) -> dict[str, Any]:
        resp = await self._client.get(url + path, headers=self._headers, timeout=self._timeout_s)
        if resp.status_code != 200:
            raise WorkerError(url, resp.status_code, resp.text[:200])
        data = resp.json()
        if not isinstance(data, dict):
            raise WorkerError(url, 502, f"{path} did not answer a JSON object")
        return data

    async def abort(self, url: str, request_id: str) -> bool:
        resp = await self._client.post(
            url + "/internal/abort",
            json={"request_id": request_id},
            headers=self._headers,
            timeout=self._timeout_s,
        )
        return resp.status_code == 200 and bool(resp.json().get("aborted", False))

    async def generate(self, url: str, body: dict[str, Any]) -> AsyncIterator[WorkerEvent]:
        """Stream events; raises WorkerError on HTTP errors, broken lines or lost connection."""
        try:
            async with self._client.stream(
                "POST", url + "/internal/generate", json=body, headers=self._headers
            ) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode("utf-8", "replace")[:500]
                    raise WorkerError(url, resp.status_code, _error_message(text))
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        yield parse_event(line)
                    except (ValueError, TypeError) as exc:
                        raise WorkerError(url, 502, f"bad event: {exc}") from exc
        except httpx.HTTPError as exc:
            raise WorkerError(url, 502, f"{type(exc).__name__}: {exc}") from exc


def _error_message(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        for key in ("message", "detail", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return text
