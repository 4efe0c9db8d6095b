"""POST /v1/completions: validate, tokenize, check lengths, route, relay (stream or not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import Request
from starlette.responses import Response

from splitserve.router.errors import bad_request
from splitserve.router.job import Job
from splitserve.router.protocol import CompletionRequest
from splitserve.router.serving_common import (
    Event,
    ServingContext,
    build_sampling,
    chain,
    check_common,
    collect,
    completion_logprobs,
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


def prompt_ids_of(ctx: ServingContext, prompt: Any) -> list[int]:
    """One prompt as token ids; several prompts in one request are rejected."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise bad_request("only one prompt per request is supported (got a list)", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        return ctx.tokenizer.encode(prompt, add_special_tokens=True)
    vocab_size = ctx.tokenizer.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise bad_request(f"prompt token ids out of range [0, {vocab_size}): {bad[:5]}", "prompt")
    return list(prompt)


async def create_completion(ctx: ServingContext, body: Any, request: Request) -> Response:
    req = parse_request(CompletionRequest, body)
    check_common(ctx, req)
    prompt_ids = prompt_ids_of(ctx, req.prompt)
    max_tokens = resolve_max_tokens(ctx, len(prompt_ids), req.max_tokens)
    job = new_job("cmpl", "completions", prompt_ids, build_sampling(req, max_tokens, req.logprobs))
    first, rest = await start(ctx, job, request)
    debug = debug_requested(request)
    if req.stream:
        return StreamingResponse(
            _stream(ctx, req, job, chain(first, rest), debug), media_type="text/event-stream"
        )
    events = await collect(request, first, rest)
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    finish = next(e for e in events if isinstance(e, FinishEvent))
    logprobs = completion_logprobs(ctx.tokenizer, tokens, 0) if req.logprobs is not None else None
    payload = {
        "id": job.request_id,
        "object": "text_completion",
        "created": created_s(),
        "model": ctx.model_name,
        "choices": [{
            "index": 0,
            "text": "".join(e.text for e in tokens),
            "logprobs": logprobs,
            "finish_reason": finish.finish_reason,
        }],
        "usage": usage(finish),
    }
    headers = debug_headers(job, debug)
    return JSONResponse(payload, headers=headers)


async def _stream(
    ctx: ServingContext, req: CompletionRequest, job: Job, events: AsyncIterator[Event],
    debug: bool,
) -> AsyncIterator[str]:
    base = {"id": job.request_id, "object": "text_completion", "created": created_s(),
            "model": ctx.model_name}
    extra: dict[str, Any] = {"usage": None} if req.include_usage else {}
    text_offset = 0
    try:
        async for event in events:
            if isinstance(event, TokenEvent):
                logprobs = None
                if req.logprobs is not None:
                    logprobs = completion_logprobs(ctx.tokenizer, [event], text_offset)
                text_offset += len(event.text)
                choice = {"index": 0, "text": event.text, "logprobs": logprobs,
                          "finish_reason": None}
                yield sse({**base, "choices": [choice], **extra})
                continue
            choice = {"index": 0, "text": "", "logprobs": None,
                      "finish_reason": event.finish_reason}
            yield sse({**base, "choices": [choice], **extra})
            if req.include_usage:
                yield sse({**base, "choices": [], "usage": usage(event)})
    except WorkerError as exc:
        yield sse_error(exc)
    if debug:
        yield timeline_comment(job)
    yield "data: [DONE]\n\n"
