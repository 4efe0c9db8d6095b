"""What the engine returns, in the shape vLLM users know.

`LLM.generate` returns `list[RequestOutput]`; each holds one `CompletionOutput` (n = 1).
Torch-free plain data with `to_dict` / `from_dict` so workers can send it as JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "abort")


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities at one output position.

    Values are `log_softmax` of the model's raw logits (before temperature, top-k/p, min-p and
    min_tokens masking), as vLLM returns by default. `rank` is 1 + the number of tokens with a
    strictly higher logprob than the sampled one. `top_token_ids` / `top_logprobs` hold the
    `SamplingParams.logprobs` most likely tokens, most likely first (empty when it is 0).
    """

    token_id: int
    logprob: float
    rank: int
    top_token_ids: tuple[int, ...] = ()
    top_logprobs: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "logprob": self.logprob,
            "rank": self.rank,
            "top_token_ids": list(self.top_token_ids),
            "top_logprobs": list(self.top_logprobs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenLogprobs:
        expected = {"token_id", "logprob", "rank", "top_token_ids", "top_logprobs"}
        if not isinstance(data, Mapping) or set(data) != expected:
            raise ValueError(f"token logprobs must have exactly the keys {sorted(expected)}")
        top_ids = tuple(int(t) for t in data["top_token_ids"])
        top_lps = tuple(float(x) for x in data["top_logprobs"])
        if len(top_ids) != len(top_lps):
            raise ValueError("top_token_ids and top_logprobs must have the same length")
        return cls(
            int(data["token_id"]), float(data["logprob"]), int(data["rank"]), top_ids, top_lps
        )


@dataclass
class CompletionOutput:
    """One generated sequence of a request (index is always 0 while n = 1)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    """None while running; "stop" (EOS, stop token id or stop string), "length", "abort"."""
    stop_reason: int | str | None = None
    """The stop string or stop token id that ended it; None for EOS, length and abort."""
    logprobs: list[TokenLogprobs] | None = None
    """One entry per token in `token_ids` when the request asked for logprobs."""
    cumulative_logprob: float | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Wall-clock timestamps (time.time() seconds) of one request's life in the engine."""

    arrival_time_s: float | None = None
    first_scheduled_time_s: float | None = None
    first_token_time_s: float | None = None
    last_token_time_s: float | None = None
    finished_time_s: float | None = None


@dataclass
class RequestOutput:
    """The state of one request after an engine step (or at the end of `LLM.generate`)."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form additions (e.g. a per-request timeline) that are not part of vLLM's shape."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (logprobs as dicts)."""
        out = dataclasses.asdict(self)
        for completion, src in zip(out["outputs"], self.outputs, strict=True):
            if src.logprobs is not None:
                completion["logprobs"] = [lp.to_dict() for lp in src.logprobs]
        return out
