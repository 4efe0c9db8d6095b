"""A small OpenAI-compatible streaming server for bench tests (FastAPI on loopback).

It streams one SSE chunk per output token after a controllable delay, honours
`stream_options.include_usage`, and can fail chosen requests (HTTP 500 before the stream,
or an error event in the middle of it) so the bench's failure accounting is exercised.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class FakeConfig:
    model: str = "fake-model"
    max_model_len: int | None = 4096
    ttft_s: float = 0.02
    token_delay_s: float = 0.005
    # TTFT grows with the streams in flight, so attainment falls as the rate rises
    ttft_per_inflight_s: float = 0.0
    fail_every: int = 0  # every k-th request (1-based) answers HTTP 500
    midstream_fail_every: int = 0  # every k-th request sends an error event mid-stream
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _sse(obj: dict[str, Any] | str) -> bytes:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {text}\n\n".encode()


def make_app(cfg: FakeConfig) -> FastAPI:
    app = FastAPI()
    counter = {"n": 0, "inflight": 0}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card: dict[str, Any] = {"id": cfg.model, "object": "model", "owned_by": "test"}
        if cfg.max_model_len is not None:
            card["max_model_len"] = cfg.max_model_len
        return {"object": "list", "data": [card]}

    async def handle(request: Request, chat: bool) -> Any:
        body = await request.json()
        cfg.bodies.append(body)
        counter["n"] += 1
        n = counter["n"]
        if cfg.fail_every and n % cfg.fail_every == 0:
            return JSONResponse({"error": {"message": "injected failure", "code": 500}}, 500)
        if chat:
            prompt_len = sum(len(m["content"].split()) for m in body["messages"])
        else:
            prompt = body["prompt"]
            prompt_len = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        num_out = int(body.get("max_tokens") or 16)
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        fail_mid = bool(cfg.midstream_fail_every and n % cfg.midstream_fail_every == 0)
        rid = f"cmpl-{n}"
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(i: int, text: str, finish: str | None) -> dict[str, Any]:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if chat:
                choice["delta"] = {"content": text} if i >= 0 else {"role": "assistant",
                                                                    "content": ""}
            else:
                choice.update(text=text, logprobs=None)
            return {"id": rid, "object": kind, "created": int(time.time()),
                    "model": cfg.model, "choices": [choice]}

        async def events() -> AsyncIterator[bytes]:
            counter["inflight"] += 1
            try:
                async for event in stream():
                    yield event
            finally:
                counter["inflight"] -= 1

        async def stream() -> AsyncIterator[bytes]:
            if chat:
                yield _sse(chunk(-1, "", None))
            await asyncio.sleep(cfg.ttft_s + cfg.ttft_per_inflight_s * counter["inflight"])
            for i in range(num_out):
                if i > 0:
                    await asyncio.sleep(cfg.token_delay_s)
                if fail_mid and i == num_out // 2:
                    yield _sse({"error": {"message": "injected mid-stream failure"}})
                    return
                yield _sse(chunk(i, f" t{i}", "length" if i == num_out - 1 else None))
            if usage:
                yield _sse({"id": rid, "object": kind, "created": int(time.time()),
                            "model": cfg.model, "choices": [],
                            "usage": {"prompt_tokens": prompt_len, "completion_tokens": num_out,
                                      "total_tokens": prompt_len + num_out}})
            if request.headers.get("x-splitserve-debug") == "1":  # as splitserve's router
                timeline = {"route_kind": "fake", "received": time.time(), "events": []}
                yield f": timeline {json.dumps(timeline)}\n\n".encode()
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await handle(request, chat=True)

    return app


@contextmanager
def serve(cfg: FakeConfig) -> Iterator[str]:
    """Runs the fake server on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(cfg), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fake server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
