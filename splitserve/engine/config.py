"""Frozen configs of the KV cache and the scheduler (pure data, no torch)."""

from __future__ import annotations

from dataclasses import dataclass


def _require_int(name: str, value: object, minimum: int) -> None:
    # bool is an int subclass; `block_size=True` is a bug, not a 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _require_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """Shape of the paged KV cache as the block manager sees it.

    num_blocks: blocks in the pool (each holds `block_size` tokens of every layer).
    block_size: tokens per block; also the prefix-cache granularity.
    enable_prefix_caching: reuse full blocks whose token prefix was computed before.
    """

    num_blocks: int
    block_size: int = 16
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        _require_int("num_blocks", self.num_blocks, 1)
        _require_int("block_size", self.block_size, 1)
        _require_bool("enable_prefix_caching", self.enable_prefix_caching)

    @property
    def num_token_slots(self) -> int:
        """Tokens the whole pool can hold."""
        return self.num_blocks * self.block_size


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    """Limits of one engine step and of the request lifecycle.

    max_num_batched_tokens: token budget of one step (prefill chunks + decodes).
    max_num_seqs: most sequences in the running batch (plus decode reservations).
    max_model_len: most tokens (prompt + output) of one sequence.
    enable_chunked_prefill: split prompts longer than the remaining budget across steps;
        without it a prompt is computed in one step, so the budget must fit the longest one.
    handoff_lease_s: how long a prefill worker pins a finished prompt's KV blocks waiting
        for the decode worker's ack before it frees them.
    """

    max_num_batched_tokens: int
    max_num_seqs: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    handoff_lease_s: float = 30.0

    def __post_init__(self) -> None:
        _require_int("max_num_batched_tokens", self.max_num_batched_tokens, 1)
        _require_int("max_num_seqs", self.max_num_seqs, 1)
        _require_int("max_model_len", self.max_model_len, 1)
        _require_bool("enable_chunked_prefill", self.enable_chunked_prefill)
        lease = self.handoff_lease_s
        if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not lease > 0:
            raise ValueError(f"handoff_lease_s must be a positive number, got {lease!r}")
        if lease == float("inf"):
            raise ValueError("handoff_lease_s must be finite: an endless lease leaks blocks")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_num_seqs ({self.max_num_seqs}): every running sequence needs a token "
                "of the step budget to decode, or the latest arrivals would starve"
            )
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_model_len ({self.max_model_len}) when enable_chunked_prefill is off, "
                "or a long prompt could never be scheduled"
            )
