"""Per-request sampling parameters, in the shape vLLM users know.

`SamplingParams` crosses the worker HTTP boundary as JSON (`to_dict` / `from_dict`), so every
field is validated in `__post_init__` and unknown keys are refused. Torch-free on purpose: the
router builds these to validate requests without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Bounds on everything a client controls (design.md: every input has a bound).
MAX_STOP_STRINGS = 16
MAX_STOP_STR_LEN = 256
MAX_STOP_TOKEN_IDS = 64
MAX_LOGPROBS = 20
# Temperatures below this are treated as greedy: dividing logits by a tinier number only
# overflows float32 without changing the argmax (vLLM uses the same cut-off).
GREEDY_TEMPERATURE_EPS = 1e-5
_SEED_MIN = -(2**63)
_SEED_MAX = 2**64 - 1


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a boolean, got {value!r}")
    return value


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the tokens of one request, and when to stop.

    Sampling order per step: temperature, then top-k, top-p, min-p (see `sampler.py`).
    `stop` and `stop_token_ids` accept any sequence (a single string for `stop` too) and are
    stored as tuples so the object stays hashable and immutable.
    """

    n: int = 1
    """Number of completions; only 1 is implemented (others are refused, never ignored)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy (argmax of the raw logits)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability sums to >= top_p."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 or -1 disables."""
    min_p: float = 0.0
    """Keep tokens whose probability is >= min_p times the top token's; 0 disables."""
    seed: int | None = None
    """Per-request seed: the token at output index i depends only on (seed, i) and logits."""
    max_tokens: int = 16
    """Maximum number of generated tokens (finish_reason "length" when reached)."""
    min_tokens: int = 0
    """EOS, stop token ids and stop strings cannot end the request before this many tokens."""
    stop: Sequence[str] = field(default=())
    """Strings that end generation; the output text is cut right before the first match."""
    stop_token_ids: Sequence[int] = field(default=())
    """Token ids that end generation (in addition to EOS unless ignore_eos)."""
    ignore_eos: bool = False
    """Keep generating past the model's EOS token."""
    logprobs: int | None = None
    """Return the sampled token's logprob plus this many top alternatives (0 = sampled only)."""
    include_stop_str_in_output: bool = False
    """Keep the matched stop string (or stop token text) at the end of the output text."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the output text."""

    def __post_init__(self) -> None:
        if _check_int("n", self.n) != 1:
            raise ValueError(f"n must be 1 (only one completion per request), got {self.n}")
        temperature = _check_float("temperature", self.temperature)
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        top_p = _check_float("top_p", self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if _check_int("top_k", self.top_k) < -1:
            raise ValueError(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k}")
        min_p = _check_float("min_p", self.min_p)
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {min_p}")
        if self.seed is not None:
            _check_int("seed", self.seed)
            if not _SEED_MIN <= self.seed <= _SEED_MAX:
                raise ValueError(f"seed must fit in 64 bits, got {self.seed}")
        if _check_int("max_tokens", self.max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if _check_int("min_tokens", self.min_tokens) < 0:
            raise ValueError(f"min_tokens must be >= 0, got {self.min_tokens}")
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens must be <= max_tokens ({self.max_tokens}), got {self.min_tokens}"
            )
        object.__setattr__(self, "temperature", temperature)
        object.__setattr__(self, "top_p", top_p)
        object.__setattr__(self, "min_p", min_p)
        object.__setattr__(self, "stop", self._validated_stop(self.stop))
        object.__setattr__(self, "stop_token_ids", self._validated_stop_ids(self.stop_token_ids))
        for name in ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens"):
            _check_bool(name, getattr(self, name))
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs)
            if not 0 <= self.logprobs <= MAX_LOGPROBS:
                raise ValueError(f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}")

    @staticmethod
    def _validated_stop(stop: object) -> tuple[str, ...]:
        if stop is None:
            return ()
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)):
            raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
        if len(stop) > MAX_STOP_STRINGS:
            raise ValueError(f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(stop)}")
        for s in stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop strings must be non-empty strings, got {s!r}")
            if len(s) > MAX_STOP_STR_LEN:
                raise ValueError(
                    f"stop strings must be at most {MAX_STOP_STR_LEN} characters, got {len(s)}"
                )
        return tuple(stop)

    @staticmethod
    def _validated_stop_ids(ids: object) -> tuple[int, ...]:
        if ids is None:
            return ()
        if not isinstance(ids, (list, tuple)):
            raise ValueError(f"stop_token_ids must be a list of integers, got {ids!r}")
        if len(ids) > MAX_STOP_TOKEN_IDS:
            raise ValueError(
                f"stop_token_ids may hold at most {MAX_STOP_TOKEN_IDS} ids, got {len(ids)}"
            )
        for token_id in ids:
            if _check_int("stop_token_ids", token_id) < 0:
                raise ValueError(f"stop_token_ids must be >= 0, got {token_id}")
        return tuple(ids)

    @property
    def greedy(self) -> bool:
        """True when the sampler takes the argmax of the raw logits."""
        return self.temperature < GREEDY_TEMPERATURE_EPS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); `from_dict` inverts it exactly."""
        out = dataclasses.asdict(self)
        out["stop"] = list(self.stop)
        out["stop_token_ids"] = list(self.stop_token_ids)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingParams:
        """Build from a decoded JSON object; unknown keys are an error, not ignored."""
        if not isinstance(data, Mapping):
            raise ValueError(f"sampling params must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(map(str, unknown))}")
        return cls(**data)
