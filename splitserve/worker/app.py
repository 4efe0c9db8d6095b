"""A worker process: one engine, its KV transfer endpoint and the internal HTTP API.

Roles: `prefill` runs prompts, samples the first token and holds the KV for a decode
worker to pull; `decode` pulls a prefilled request's KV and continues it; `mixed` does
both phases itself (the colocated baseline). Every role accepts `mode=full`, so the
router can prefill short prompts on a decode worker (conditional disaggregation).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse, Response, StreamingResponse

from splitserve.engine.llm_engine import LLMEngine, StepOutput
from splitserve.engine.sampling_params import SamplingParams
from splitserve.worker.config import WorkerConfig
from splitserve.worker.engine_thread import EngineThread
from splitserve.worker.kv_bridge import KVBridge
from splitserve.worker.metrics import WorkerMetrics
from splitserve.worker.protocol import AbortRequest, GenerateRequest, error_line, event_line

log = logging.getLogger(__name__)


class WorkerState:
    """Everything the routes share; built in the app's lifespan."""

    def __init__(self, cfg: WorkerConfig, engine: LLMEngine, loop: asyncio.AbstractEventLoop):
        self.cfg = cfg
        self.engine = engine
        self.thread = EngineThread(engine, loop)
        self.kv = KVBridge(cfg, engine, self.thread)
        self.metrics = WorkerMetrics(cfg, engine)
        self.ready = False


def create_app(cfg: WorkerConfig, engine: LLMEngine | None = None) -> FastAPI:
    """Build the worker app. `engine` may be given (tests); else it is loaded at startup."""
    holder: dict[str, WorkerState] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        eng = engine if engine is not None else await asyncio.to_thread(
            LLMEngine.from_config, cfg.engine)
        state = WorkerState(cfg, eng, asyncio.get_running_loop())
        state.thread.start()
        state.kv.start()
        state.ready = True
        holder["state"] = state
        log.info("worker %s (%s) ready on %s:%d", cfg.worker_id, cfg.role, cfg.host, cfg.port)
        try:
            yield
        finally:
            state.ready = False
            state.kv.close()
            state.thread.stop()

    app = FastAPI(title="splitserve worker", lifespan=lifespan)

    def state() -> WorkerState:
        return holder["state"]

    def check_secret(x_splitserve_secret: str | None = Header(default=None)) -> None:
        if not hmac.compare_digest((x_splitserve_secret or "").encode(), cfg.secret.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong cluster secret")

    auth = [Depends(check_secret)]

    @app.get("/internal/health", dependencies=auth)
    async def health() -> dict[str, Any]:
        st = state()
        return {"ready": st.ready, "role": cfg.role, "worker_id": cfg.worker_id,
                "model_id": st.engine.model_identity.model_hash}

    @app.get("/internal/load", dependencies=auth)
    async def load() -> dict[str, Any]:
        return state().engine.stats()

    @app.get("/metrics")
    async def metrics() -> Response:
        st = state()
        body, content_type = st.metrics.render(st.thread.busy_s)
        return Response(body, media_type=content_type)

    @app.post("/internal/abort", dependencies=auth)
    async def abort(req: AbortRequest) -> dict[str, bool]:
        return {"aborted": await _abort(state(), req.request_id)}

    @app.post("/internal/generate", dependencies=auth)
    async def generate(req: GenerateRequest) -> Response:
        st = state()
        try:
            params = SamplingParams.from_dict(req.sampling)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if req.mode == "decode" and (req.handoff is None or req.first_token_id is None):
            return JSONResponse({"error": "mode=decode needs handoff and first_token_id"},
                                status_code=400)
        if req.mode == "prefill" and cfg.role == "decode":
            return JSONResponse({"error": "a decode worker does not take mode=prefill"},
                                status_code=400)
        stream = _generate_stream(st, req, params)
        return StreamingResponse(stream, media_type="application/x-ndjson")

    return app


async def _generate_stream(
    st: WorkerState, req: GenerateRequest, params: SamplingParams
) -> AsyncIterator[bytes]:
    """Yield NDJSON events for one request; aborts the request if the client goes away."""
    timeline: dict[str, float] = {"worker_received": time.time()}
    queue = st.thread.subscribe(req.request_id)
    done = False
    try:
        if req.mode == "decode":
            err = await st.kv.receive(req, params, timeline)
            if err is not None:
                done = True
                yield err
                return
        else:
            try:
                await st.thread.acall(lambda: st.engine.add_request(
                    req.request_id, req.prompt_token_ids, params,
                    prefill_only=req.mode == "prefill"))
            except ValueError as exc:
                done = True
                yield error_line(400, str(exc), "invalid_request_error")
                return
        while True:
            out = await queue.get()
            if out is None:
                done = True
                return
            if out.new_token_ids or out.new_text:
                timeline.setdefault("worker_first_token", time.time())
                yield _token_event(out)
            if out.held:
                record = await asyncio.to_thread(st.kv.offer, out)
                timeline["worker_handoff_offered"] = time.time()
                done = True
                yield event_line("handoff", record=record, emitted_text_len=out.emitted_text_len,
                                 timeline={**timeline, **out.timeline})
                return
            if out.finished:
                timeline["worker_finished"] = time.time()
                done = True
                if out.finish_reason == "error":
                    yield error_line(500, str(out.stop_reason or "engine error"))
                    return
                yield event_line("finish", finish_reason=out.finish_reason,
                                 stop_reason=out.stop_reason,
                                 num_prompt_tokens=out.num_prompt_tokens,
                                 num_output_tokens=out.num_output_tokens,
                                 timeline={**timeline, **out.timeline})
                return
    finally:
        st.thread.unsubscribe(req.request_id)
        if not done:  # client went away (or we were cancelled): free everything now
            asyncio.ensure_future(_abort(st, req.request_id))


async def _abort(st: WorkerState, request_id: str) -> bool:
    """Abort in any state. A HELD request's blocks may be under a pull right now: the KV
    server releases them (through the engine) once no pull reads them any more."""
    if st.kv.abort_held(request_id) or st.kv.abort_receiving(request_id):
        return True
    return bool(await st.thread.acall(lambda: st.engine.abort(request_id)))


def _token_event(out: StepOutput) -> bytes:
    logprobs = None
    if out.logprobs is not None:
        # wire shape: one entry per token id, alternatives as {"token_id", "logprob"}
        logprobs = [{"token_id": lp["token_id"], "logprob": lp["logprob"], "rank": lp["rank"],
                     "top_logprobs": [{"token_id": t, "logprob": v} for t, v in
                                      zip(lp["top_token_ids"], lp["top_logprobs"], strict=True)]}
                    for lp in out.logprobs]
    return event_line("token", token_ids=out.new_token_ids, text=out.new_text,
                      logprobs=logprobs)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
