"""FastAPI glue: builds the router app (routes, error handlers, lifespan)."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from splitserve.router.config import RouterConfig
from splitserve.router.errors import OpenAIError, bad_request
from splitserve.router.metrics import RouterMetrics
from splitserve.router.policies import PolicyConfig, Role
from splitserve.router.pool import WorkerPool
from splitserve.router.relay import Relay
from splitserve.router.serving_chat import create_chat_completion
from splitserve.router.serving_common import ServingContext
from splitserve.router.serving_completions import create_completion
from splitserve.router.timeline import TimelineStore
from splitserve.router.worker_client import WorkerClient
from splitserve.tokenizer import Tokenizer, load_tokenizer


def resolve_max_model_len(config: RouterConfig) -> int:
    """--max-model-len, else config.json `max_position_embeddings`."""
    if config.max_model_len is not None:
        return config.max_model_len
    path = Path(config.model_dir) / "config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read max_position_embeddings from {path}: {exc}") from None
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{path}: max_position_embeddings missing or invalid; pass --max-model-len")
    return value


def served_model_name(config: RouterConfig) -> str:
    return config.served_model_name or Path(config.model_dir).resolve().name


async def read_json_body(request: Request, limit_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise OpenAIError(413, f"request body exceeds {limit_bytes} bytes", code="body_too_large")
    chunks: list[bytes] = []
    num_bytes = 0
    async for chunk in request.stream():
        num_bytes += len(chunk)
        if num_bytes > limit_bytes:
            raise OpenAIError(413, f"request body exceeds {limit_bytes} bytes", code="body_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        raise bad_request(f"malformed JSON body: {exc}") from None


def check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
        raise OpenAIError(401, "invalid or missing API key", code="invalid_api_key")


def _worker_roles(config: RouterConfig) -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for urls, role in ((config.prefill_urls, "prefill"), (config.decode_urls, "decode"),
                       (config.mixed_urls, "mixed")):
        for url in urls:
            if url.rstrip("/") in roles:
                raise ValueError(f"worker URL listed twice: {url}")
            roles[url.rstrip("/")] = role  # type: ignore[assignment]
    return roles


def build_app(config: RouterConfig, tokenizer: Tokenizer | None = None) -> FastAPI:
    """The router app. Workers are polled once before serving, then every poll_interval_s."""
    tok = tokenizer if tokenizer is not None else load_tokenizer(config.model_dir)
    max_model_len = resolve_max_model_len(config)
    model_name = served_model_name(config)
    roles = _worker_roles(config)
    metrics = RouterMetrics()
    timelines = TimelineStore(config.num_debug_timelines)
    policy = PolicyConfig(config.policy, config.short_prompt_len, config.saturated_num_waiting)
    started_s = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        timeout = httpx.Timeout(config.worker_timeout_s, read=None)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            client = WorkerClient(http, config.secret, config.worker_timeout_s)
            pool = WorkerPool(roles, client, config.poll_interval_s)
            relay = Relay(pool, client, policy, metrics, timelines)
            app.state.pool = pool
            app.state.ctx = ServingContext(tok, relay, model_name, max_model_len,
                                           config.max_stop_strings)
            await pool.poll_once()
            pool.start()
            try:
                yield
            finally:
                await pool.stop()
                await relay.close()

    app = FastAPI(title="splitserve router", lifespan=lifespan)
    app.state.metrics = metrics

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> Response:
        metrics.rejected.labels(code=str(exc.status)).inc()
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        metrics.rejected.labels(code=str(exc.status_code)).inc()
        return OpenAIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return bad_request(str(exc.errors()[:1])).response()

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> Response:
        return OpenAIError(500, f"internal error: {type(exc).__name__}").response()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        check_api_key(request, config.api_key)
        body = await read_json_body(request, config.max_body_bytes)
        return await create_completion(request.app.state.ctx, body, request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        check_api_key(request, config.api_key)
        body = await read_json_body(request, config.max_body_bytes)
        return await create_chat_completion(request.app.state.ctx, body, request)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_api_key(request, config.api_key)
        card = {"id": model_name, "object": "model", "created": started_s,
                "owned_by": "splitserve", "max_model_len": max_model_len}
        return {"object": "list", "data": [card]}

    @app.get("/health")
    async def health(request: Request) -> Response:
        snapshot = request.app.state.pool.snapshot()
        workers = [{"url": w.url, "role": w.role, "healthy": w.healthy,
                    "num_inflight": w.num_inflight} for w in snapshot]
        serving = any(w.healthy and w.role in ("decode", "mixed") for w in snapshot)
        body = {"status": "ok" if serving else "no_healthy_worker", "workers": workers}
        return JSONResponse(body, status_code=200 if serving else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/debug/requests/{request_id}")
    async def debug_request(request_id: str) -> dict[str, Any]:
        timeline = timelines.get(request_id)
        if timeline is None:
            raise OpenAIError(404, f"no recent request {request_id!r}", code="not_found")
        return timeline.as_dict()

    return app
