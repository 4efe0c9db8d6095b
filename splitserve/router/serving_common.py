"""What the completions and chat endpoints share: validation, lengths, sampling, starting
a relay, SSE framing, usage and logprobs formatting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from splitserve.router.errors import OpenAIError, bad_request
from splitserve.router.job import Job
from splitserve.router.policies import NoWorkerError
from splitserve.router.protocol import _SamplingRequest, describe_validation_error
from splitserve.router.relay import Relay
from splitserve.router.timeline import RequestTimeline
from splitserve.router.worker_client import FinishEvent, TokenEvent, WorkerError
from splitserve.tokenizer import Tokenizer

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Event = TokenEvent | FinishEvent
DEBUG_HEADER = "x-splitserve-debug"
_DISCONNECT_POLL_S = 0.05


@dataclass(frozen=True)
class ServingContext:
    tokenizer: Tokenizer
    relay: Relay
    model_name: str
    max_model_len: int
    max_stop_strings: int


def parse_request(model: type[M], body: Any) -> M:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise bad_request(message, param) from None


def check_common(ctx: ServingContext, req: _SamplingRequest) -> None:
    if req.model != ctx.model_name:
        raise OpenAIError(
            404, f"the model {req.model!r} does not exist; this server serves {ctx.model_name!r}",
            param="model", code="model_not_found",
        )
    if len(req.stop_list()) > ctx.max_stop_strings:
        raise bad_request(f"at most {ctx.max_stop_strings} stop strings are allowed", "stop")


def resolve_max_tokens(ctx: ServingContext, num_prompt_tokens: int, requested: int | None) -> int:
    """Requested or (when None) all remaining context; 400 when it cannot fit."""
    if num_prompt_tokens == 0:
        raise bad_request("the prompt is empty", "prompt")
    if requested is not None and requested <= 0:
        raise bad_request(f"max_tokens must be at least 1, got {requested}", "max_tokens")
    max_tokens = requested if requested is not None else ctx.max_model_len - num_prompt_tokens
    if num_prompt_tokens + max(max_tokens, 1) > ctx.max_model_len:
        raise bad_request(
            f"this model's maximum context length is {ctx.max_model_len} tokens; the request "
            f"has {num_prompt_tokens} prompt tokens and asks for {max_tokens} more",
            "max_tokens" if num_prompt_tokens < ctx.max_model_len else "prompt",
        )
    return max_tokens


def build_sampling(req: _SamplingRequest, max_tokens: int, logprobs: int | None) -> dict[str, Any]:
    """The `sampling` object of /internal/generate (names follow the OpenAI fields)."""
    return {
        "max_tokens": max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": -1 if req.top_k <= 0 else req.top_k,
        "min_p": req.min_p,
        "seed": req.seed,
        "stop": req.stop_list(),
        "ignore_eos": req.ignore_eos,
        "logprobs": logprobs,
    }


def new_job(prefix: str, endpoint: str, prompt_ids: list[int], sampling: dict[str, Any]) -> Job:
    request_id = f"{prefix}-{uuid.uuid4().hex}"
    return Job(request_id, prompt_ids, sampling, endpoint, RequestTimeline(request_id))


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client goes away first, cancel it (its cleanup aborts the
    request on the workers) and answer 499."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if not done and await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise OpenAIError(499, "client disconnected")
        return task.result()
    except asyncio.CancelledError:
        task.cancel()
        raise


def _worker_status(exc: WorkerError) -> int:
    """Worker answers map to what the client can act on: its own mistakes stay 400,
    overload stays 503, anything else (including a wrong cluster secret) is a 502."""
    if exc.code in (400, 413, 422):
        return 400
    if exc.code in (429, 503):
        return 503
    return 502


async def start(ctx: ServingContext, job: Job, request: Request) -> tuple[Event, AsyncIterator[Event]]:
    """Route and wait for the first event, so routing and prefill failures are HTTP errors."""
    try:
        route = ctx.relay.route(job)
    except NoWorkerError as exc:
        raise OpenAIError(503, str(exc), code="no_healthy_worker") from None
    events = ctx.relay.run(job, route)
    try:
        first = await until_disconnect(request, events.__anext__())
    except BaseException as exc:
        # run() releases when it ends, but a generator cancelled before it started never
        # runs its cleanup; release() is idempotent.
        ctx.relay.release(job)
        if isinstance(exc, WorkerError):
            raise OpenAIError(_worker_status(exc), exc.message, code="worker_error") from None
        if isinstance(exc, StopAsyncIteration):
            raise OpenAIError(502, "worker stream ended early", code="worker_error") from None
        raise
    return first, events


async def chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for event in rest:
        yield event


async def collect(request: Request, first: Event, rest: AsyncIterator[Event]) -> list[Event]:
    async def run() -> list[Event]:
        return [event async for event in chain(first, rest)]

    try:
        return await until_disconnect(request, run())
    except WorkerError as exc:
        raise OpenAIError(_worker_status(exc), exc.message, code="worker_error") from None


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_error(exc: WorkerError) -> str:
    return sse(OpenAIError(_worker_status(exc), exc.message, code="worker_error").body())


def debug_requested(request: Request) -> bool:
    return request.headers.get(DEBUG_HEADER, "") in ("1", "true")


def debug_headers(job: Job, debug: bool) -> dict[str, str] | None:
    """The request's timeline as a response header when the client asked for it."""
    return {"X-Splitserve-Timeline": json.dumps(job.timeline.as_dict())} if debug else None


def timeline_comment(job: Job) -> str:
    return f": timeline {json.dumps(job.timeline.as_dict(), separators=(',', ':'))}\n\n"


def usage(finish: FinishEvent) -> dict[str, int]:
    return {
        "prompt_tokens": finish.num_prompt_tokens,
        "completion_tokens": finish.num_output_tokens,
        "total_tokens": finish.num_prompt_tokens + finish.num_output_tokens,
    }


def created_s() -> int:
    return int(time.time())


def token_text(tok: Tokenizer, token_id: int) -> str:
    return tok.decode([token_id], skip_special_tokens=False)


def completion_logprobs(tok: Tokenizer, events: list[TokenEvent], text_offset: int) -> dict[str, Any]:
    """Legacy completions shape: parallel lists of tokens, logprobs, top dicts, offsets."""
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for event in events:
        for token_id, entry in zip(event.token_ids, event.logprobs or [], strict=False):
            text = token_text(tok, token_id)
            out["tokens"].append(text)
            out["token_logprobs"].append(float(entry.get("logprob", 0.0)))
            out["top_logprobs"].append(
                {token_text(tok, int(t["token_id"])): float(t["logprob"])
                 for t in entry.get("top_logprobs") or []}
            )
            out["text_offset"].append(text_offset)
            text_offset += len(text)
    return out


def chat_logprobs(tok: Tokenizer, events: list[TokenEvent]) -> dict[str, Any]:
    """Chat shape: one entry per token with bytes and its top alternatives."""
    content = []
    for event in events:
        for token_id, entry in zip(event.token_ids, event.logprobs or [], strict=False):
            text = token_text(tok, token_id)
            top = []
            for alt in entry.get("top_logprobs") or []:
                alt_text = token_text(tok, int(alt["token_id"]))
                top.append({"token": alt_text, "logprob": float(alt["logprob"]),
                            "bytes": list(alt_text.encode())})
            content.append({"token": text, "logprob": float(entry.get("logprob", 0.0)),
                            "bytes": list(text.encode()), "top_logprobs": top})
    return {"content": content}
