"""POST /v1/chat/completions: validate, apply the checkpoint's chat template, tokenize,
check lengths, route, relay (stream or not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jinja2
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from splitserve.router.errors import bad_request
from splitserve.router.job import Job
from splitserve.router.protocol import ChatCompletionRequest
from splitserve.router.serving_common import (
    Event,
    ServingContext,
    build_sampling,
    chain,
    chat_logprobs,
    check_common,
    collect,
    created_s,
    debug_headers,
    debug_requested,
    new_job,
    parse_request,
    resolve_max_tokens,
    sse,
    sse_error,
    start,
    timeline_comment,
    usage,
)
from splitserve.router.worker_client import FinishEvent, TokenEvent, WorkerError


def chat_prompt_ids(ctx: ServingContext, req: ChatCompletionRequest) -> list[int]:
    messages = [
        {"role": m.role, "content": m.text(), **({"name": m.name} if m.name else {})}
        for m in req.messages
    ]
    try:
        text = ctx.tokenizer.apply_chat_template(messages, req.add_generation_prompt)
    except (jinja2.TemplateError, ValueError) as exc:
        raise bad_request(f"chat template failed: {exc}", "messages") from None
    # The template writes BOS itself when the model wants one.
    return ctx.tokenizer.encode(text, add_special_tokens=False)


async def create_chat_completion(ctx: ServingContext, body: Any, request: Request) -> Response:
    req = parse_request(ChatCompletionRequest, body)
    check_common(ctx, req)
    prompt_ids = chat_prompt_ids(ctx, req)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    max_tokens = resolve_max_tokens(ctx, len(prompt_ids), requested)
    num_logprobs = (req.top_logprobs or 0) if req.logprobs else None
    job = new_job("chatcmpl", "chat", prompt_ids, build_sampling(req, max_tokens, num_logprobs))
    first, rest = await start(ctx, job, request)
    debug = debug_requested(request)
    if req.stream:
        return StreamingResponse(
            _stream(ctx, req, job, chain(first, rest), debug), media_type="text/event-stream"
        )
    events = await collect(request, first, rest)
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    finish = next(e for e in events if isinstance(e, FinishEvent))
    payload = {
        "id": job.request_id,
        "object": "chat.completion",
        "created": created_s(),
        "model": ctx.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "".join(e.text for e in tokens)},
            "logprobs": chat_logprobs(ctx.tokenizer, tokens) if req.logprobs else None,
            "finish_reason": finish.finish_reason,
        }],
        "usage": usage(finish),
    }
    headers = debug_headers(job, debug)
    return JSONResponse(payload, headers=headers)


async def _stream(
    ctx: ServingContext, req: ChatCompletionRequest, job: Job, events: AsyncIterator[Event],
    debug: bool,
) -> AsyncIterator[str]:
    base = {"id": job.request_id, "object": "chat.completion.chunk", "created": created_s(),
            "model": ctx.model_name}
    extra: dict[str, Any] = {"usage": None} if req.include_usage else {}

    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**base, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in events:
            if isinstance(event, TokenEvent):
                logprobs = chat_logprobs(ctx.tokenizer, [event]) if req.logprobs else None
                yield chunk({"content": event.text}, logprobs)
                continue
            yield chunk({}, finish=event.finish_reason)
            if req.include_usage:
                yield sse({**base, "choices": [], "usage": usage(event)})
    except WorkerError as exc:
        yield sse_error(exc)
    if debug:
        yield timeline_comment(job)
    yield "data: [DONE]\n\n"
