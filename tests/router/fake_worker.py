"""A fake worker speaking the worker internal API (docs/architecture.md), for router tests.

It emits a fixed script of (token_id, text) pairs: token 0 in `prefill` mode, tokens 1.. in
`decode` mode (continuing after `first_token_id`), the whole script in `full` mode. It
records every call, every abort and the secret header it saw, and can be told to fail.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class FakeBehaviour:
    script: list[tuple[int, str]]
    token_delay_s: float = 0.0
    prefill_finishes: bool = False  # P says finish after token 0 (e.g. it sampled EOS)
    prefill_fails: bool = False  # P answers an error event before any token
    num_decode_failures: int = 0  # next N decode calls fail before any token (KV error)
    fail_after_tokens: int | None = None  # decode/full fail after this many tokens
    finish_reason: str | None = None  # overrides the natural "stop"/"length"
    ready: bool = True
    num_waiting: int = 0


@dataclass
class FakeWorker:
    role: str
    secret: str
    behaviour: FakeBehaviour
    url: str = ""
    generate_calls: list[dict[str, Any]] = field(default_factory=list)
    aborts: list[tuple[str, float]] = field(default_factory=list)
    secrets_seen: set[str] = field(default_factory=set)
    _aborted: set[str] = field(default_factory=set)

    def app(self) -> FastAPI:
        app = FastAPI()

        def authorized(request: Request) -> bool:
            self.secrets_seen.add(request.headers.get("x-splitserve-secret", ""))
            return request.headers.get("x-splitserve-secret") == self.secret

        @app.get("/internal/health")
        async def health(request: Request) -> Any:
            if not authorized(request):
                return JSONResponse({"message": "bad secret"}, status_code=401)
            return {"ready": self.behaviour.ready, "role": self.role,
                    "worker_id": self.url, "model_id": "fake"}

        @app.get("/internal/load")
        async def load(request: Request) -> Any:
            if not authorized(request):
                return JSONResponse({"message": "bad secret"}, status_code=401)
            return {"num_waiting": self.behaviour.num_waiting, "num_running": 0, "num_held": 0,
                    "num_free_blocks": 100, "num_used_blocks": 0, "num_cached_blocks": 0,
                    "num_total_blocks": 100}

        @app.post("/internal/abort")
        async def abort(request: Request) -> Any:
            if not authorized(request):
                return JSONResponse({"message": "bad secret"}, status_code=401)
            request_id = (await request.json())["request_id"]
            self.aborts.append((request_id, time.monotonic()))
            self._aborted.add(request_id)
            return {"aborted": True}

        @app.post("/internal/generate")
        async def generate(request: Request) -> Any:
            if not authorized(request):
                return JSONResponse({"message": "bad secret"}, status_code=401)
            body = await request.json()
            self.generate_calls.append(body)
            return StreamingResponse(self._events(body), media_type="application/x-ndjson")

        return app

    async def _events(self, body: dict[str, Any]) -> AsyncIterator[str]:
        for event in self._script_events(body):
            if body["request_id"] in self._aborted:
                return
            if event["type"] == "token" and self.behaviour.token_delay_s:
                await asyncio.sleep(self.behaviour.token_delay_s)
            yield json.dumps(event) + "\n"

    def _token(self, index: int, logprobs: int | None) -> dict[str, Any]:
        token_id, text = self.behaviour.script[index]
        lp = None
        if logprobs is not None:
            top = [{"token_id": token_id, "logprob": -0.25}, {"token_id": 0, "logprob": -2.0}]
            lp = [{"logprob": -0.25, "top_logprobs": top[:logprobs]}]
        return {"type": "token", "token_ids": [token_id], "text": text, "logprobs": lp}

    def _script_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        sampling = body["sampling"]
        max_tokens = min(sampling["max_tokens"], len(self.behaviour.script))
        num_prompt = len(body["prompt_token_ids"])
        mode = body["mode"]
        if mode == "prefill":
            if self.behaviour.prefill_fails:
                return [{"type": "error", "code": 500, "message": "prefill out of memory"}]
            events = [self._token(0, sampling["logprobs"])]
            if self.behaviour.prefill_finishes or max_tokens == 1:
                reason = "stop" if self.behaviour.prefill_finishes else "length"
                return events + [self._finish(reason, num_prompt, 1, {"queue_s": 0.001})]
            record = {"request_id": body["request_id"], "source": self.url,
                      "num_tokens": num_prompt, "block_ids": [1, 2]}
            return events + [{"type": "handoff", "record": record, "timeline": {"queue_s": 0.003}}]
        if mode == "decode":
            if self.behaviour.num_decode_failures > 0:
                self.behaviour.num_decode_failures -= 1
                return [{"type": "error", "code": 502, "message": "KV transfer: checksum mismatch"}]
            first = 1
        else:
            first = 0
        events = [self._token(i, sampling["logprobs"]) for i in range(first, max_tokens)]
        limit = self.behaviour.fail_after_tokens
        if limit is not None and limit < len(events):
            return events[:limit] + [{"type": "error", "code": 500, "message": "engine crashed"}]
        reason = "length" if max_tokens == sampling["max_tokens"] else "stop"
        reason = self.behaviour.finish_reason or reason
        timeline = {"kv_transfer_s": 0.004, "kv_transfer_bytes": 65536} if mode == "decode" else {
            "queue_s": 0.002}
        return events + [self._finish(reason, num_prompt, max_tokens, timeline)]

    @staticmethod
    def _finish(reason: str, num_prompt: int, num_output: int, timeline: dict[str, Any]
                ) -> dict[str, Any]:
        return {"type": "finish", "finish_reason": reason, "num_prompt_tokens": num_prompt,
                "num_output_tokens": num_output, "timeline": timeline}


class ServerThread:
    """A uvicorn server on 127.0.0.1 (ephemeral port) in a daemon thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def stop_all(servers: list[ServerThread]) -> None:
    """Ask every server to exit first, then wait: shutdowns overlap."""
    for server in servers:
        server.server.should_exit = True
    for server in servers:
        server.thread.join(timeout=5)
