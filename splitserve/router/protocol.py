"""OpenAI request models. Fields we do not implement are rejected (extra="forbid"), never
silently ignored; a few harmless ones (`user`, zero penalties, `n=1`) are accepted."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_TOP_LOGPROBS = 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingRequest(_Strict):
    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(-1, ge=-1)  # vLLM extra; -1 or 0: disabled
    min_p: float = Field(0.0, ge=0.0, le=1.0)  # vLLM extra
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    ignore_eos: bool = False  # vLLM extra
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalties(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("presence/frequency penalties are not supported (must be 0)")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_strings_non_empty(cls, stop: str | list[str] | None) -> str | list[str] | None:
        for item in [stop] if isinstance(stop, str) else stop or []:
            if not item:
                raise ValueError("stop strings must be non-empty")
        return stop

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> _SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_SamplingRequest):
    # One prompt: text or token ids. A list of several prompts is rejected in serving.
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    add_generation_prompt: bool = True  # vLLM extra

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """First error as (message, param), phrased for a client."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
    # Union types put the tried type names into loc; keep the field path only.
    param = loc.split(".")[0] if loc else None
    if err.get("type") == "extra_forbidden":
        return f"unsupported parameter: {loc!r} is not implemented by this server", param
    msg = str(err.get("msg", "invalid value"))
    return (f"{loc}: {msg}" if loc else msg), param
