"""One request's token state as the scheduler and block manager see it (pure data)."""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, field
from typing import Protocol


def as_token_id(value: object, where: str) -> int:
    """A plain int >= 0 from any integer type (numpy/torch scalars included); else ValueError."""
    try:
        token_id = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        token_id = -1
    if isinstance(value, bool) or token_id < 0:
        raise ValueError(f"{where}: token ids must be integers >= 0, got {value!r}")
    return token_id


class HasMaxTokens(Protocol):
    """All the scheduler reads of a request's sampling params (the rest is opaque)."""

    @property
    def max_tokens(self) -> int | None: ...


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, never admitted
    PREEMPTED = "preempted"  # queued again after its blocks were taken; recomputes
    RUNNING = "running"  # in the batch: prefilling (maybe in chunks) or decoding
    HELD = "held"  # prefill-only: prompt computed, blocks pinned for the decode worker
    RESERVED = "reserved"  # decode side: blocks allocated, KV bytes not yet moving
    RECEIVING = "receiving"  # decode side: KV bytes arriving into the reserved blocks
    VERIFIED = "verified"  # decode side: checksums match; may be activated
    RELEASED = "released"  # prefill-only: held blocks freed (ack, abort or lease expiry)
    FINISHED_STOPPED = "finished_stopped"
    FINISHED_LENGTH = "finished_length"
    FINISHED_ABORTED = "finished_aborted"
    FINISHED_FAILED = "finished_failed"

    @property
    def is_finished(self) -> bool:
        return self in _DONE

    @property
    def is_queued(self) -> bool:
        return self in (SequenceStatus.WAITING, SequenceStatus.PREEMPTED)

    @property
    def is_receiving_kv(self) -> bool:
        """Decode side, before activation: blocks reserved, KV not yet usable."""
        return self in (SequenceStatus.RESERVED, SequenceStatus.RECEIVING, SequenceStatus.VERIFIED)


_DONE = frozenset(
    {
        SequenceStatus.RELEASED,
        SequenceStatus.FINISHED_STOPPED,
        SequenceStatus.FINISHED_LENGTH,
        SequenceStatus.FINISHED_ABORTED,
        SequenceStatus.FINISHED_FAILED,
    }
)


class FinishReason(enum.Enum):
    """Why the engine ends a sequence; maps onto a FINISHED_* status."""

    STOPPED = "stop"  # stop token / stop string: the OpenAI "stop" finish_reason
    LENGTH = "length"  # max_tokens or max_model_len
    ABORTED = "abort"
    FAILED = "failed"

    @property
    def status(self) -> SequenceStatus:
        return _REASON_STATUS[self]


_REASON_STATUS = {
    FinishReason.STOPPED: SequenceStatus.FINISHED_STOPPED,
    FinishReason.LENGTH: SequenceStatus.FINISHED_LENGTH,
    FinishReason.ABORTED: SequenceStatus.FINISHED_ABORTED,
    FinishReason.FAILED: SequenceStatus.FINISHED_FAILED,
}


@dataclass(eq=False)
class Sequence:
    """Tokens, progress and KV blocks of one request.

    Invariant the scheduler keeps: `num_computed_tokens <= num_tokens`; the KV of tokens
    [0, num_computed_tokens) sits in `block_ids` (block i holds positions
    [i * block_size, (i + 1) * block_size)). A decoding sequence has exactly one token
    not yet computed: the last sampled one. `arrival_index` is set by the scheduler.
    Identity, not value, is equality: two requests with equal tokens are different.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: HasMaxTokens | None = None
    prefill_only: bool = False
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    block_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    arrival_index: int = -1
    num_preemptions: int = 0
    # Hashes of the full blocks of all_token_ids, filled lazily by the block manager;
    # tokens never change once appended, so a prefix of hashes stays valid.
    block_hashes: list[bytes] = field(default_factory=list, repr=False)
    # How many leading entries of block_ids are registered in the prefix cache.
    num_cached_blocks: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty str, got {self.request_id!r}")
        if not self.prompt_token_ids:
            raise ValueError(f"request {self.request_id}: prompt_token_ids is empty")
        self.prompt_token_ids = [
            as_token_id(t, f"request {self.request_id}") for t in self.prompt_token_ids
        ]
        self.output_token_ids = [
            as_token_id(t, f"request {self.request_id}") for t in self.output_token_ids
        ]
        max_tokens = self.max_tokens
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"request {self.request_id}: max_tokens must be >= 1")

    @property
    def max_tokens(self) -> int | None:
        return None if self.params is None else self.params.max_tokens

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefill(self) -> bool:
        """More than the one last-sampled token is uncomputed (prompt, or recompute)."""
        return self.num_uncomputed_tokens > 1 or self.num_output_tokens == 0

    @property
    def last_token_id(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    def token_ids_slice(self, start: int, stop: int) -> list[int]:
        """Tokens at positions [start, stop) of prompt + output, without a full copy."""
        num_prompt = len(self.prompt_token_ids)
        if stop <= num_prompt:
            return self.prompt_token_ids[start:stop]
        if start >= num_prompt:
            return self.output_token_ids[start - num_prompt : stop - num_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - num_prompt]
