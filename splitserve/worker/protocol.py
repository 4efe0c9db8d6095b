"""Typed messages of the worker's internal HTTP API (see docs/architecture.md)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_TOKENS = 1 << 20


class GenerateRequest(BaseModel):
    """Body of POST /internal/generate. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=256)
    prompt_token_ids: list[int] = Field(min_length=1, max_length=MAX_PROMPT_TOKENS)
    sampling: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["full", "prefill", "decode"] = "full"
    handoff: dict[str, Any] | None = None
    first_token_id: int | None = None
    # Characters of the first token's text the prefill worker already sent (the decode
    # worker's detokenizer replays the first token and must not send them twice).
    emitted_text_len: int = Field(default=0, ge=0)


class AbortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=256)


def event_line(kind: str, **fields: Any) -> bytes:
    """One NDJSON event: {"type": kind, ...}."""
    return (json.dumps({"type": kind, **fields}, separators=(",", ":")) + "\n").encode()


def error_line(code: int, message: str, err_type: str = "internal_error") -> bytes:
    return event_line("error", code=code, message=message, error_type=err_type)
