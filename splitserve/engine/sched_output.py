"""Plain-data messages the scheduler hands to the engine loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ScheduledSequence:
    """One sequence's work in one step.

    The model computes K/V for `token_ids`, which sit at positions
    [num_computed_tokens, num_computed_tokens + num_new_tokens), writing them into
    `block_ids` (the sequence's whole block table: position p goes to block
    block_ids[p // block_size], offset p % block_size) and attending over every earlier
    position too. When `sample` is true the engine samples one token from the logits of
    the last of these rows; otherwise (a partial prefill chunk) it samples nothing.
    """

    request_id: str
    token_ids: tuple[int, ...]
    num_computed_tokens: int  # tokens already in the cache = position of token_ids[0]
    block_ids: tuple[int, ...]
    sample: bool

    @property
    def num_new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def start_pos(self) -> int:
        return self.num_computed_tokens

    @property
    def positions(self) -> range:
        """Position of each of token_ids."""
        return range(self.num_computed_tokens, self.num_computed_tokens + len(self.token_ids))

    def slot_ids(self, block_size: int) -> list[int]:
        """Cache slot (block_id * block_size + offset) each new token's K/V is written to."""
        return [
            self.block_ids[p // block_size] * block_size + p % block_size for p in self.positions
        ]

    @property
    def context_len(self) -> int:
        """Cached + new tokens after this step (what attention spans)."""
        return self.num_computed_tokens + len(self.token_ids)


@dataclass(frozen=True)
class SchedulerOutput:
    """What one `Scheduler.schedule()` decided; pass it back unchanged to `update()`.

    scheduled: decodes first, then prefill chunks, then newly admitted prompts.
    preempted_ids: sequences whose blocks were taken this step; they recompute later.
    """

    step_index: int
    scheduled: tuple[ScheduledSequence, ...]
    preempted_ids: tuple[str, ...]

    @property
    def num_batched_tokens(self) -> int:
        return sum(item.num_new_tokens for item in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass(frozen=True)
class UpdateResult:
    """What `Scheduler.update()` changed.

    appended_ids: sequences that got the sampled token appended, in batch order (includes
        those that then finished or went HELD); the engine checks stop conditions on them.
    finished_length_ids: reached max_tokens or the length limit (already freed).
    held_ids: prefill-only sequences now HELD: export their KV and emit the handoff.
    """

    appended_ids: tuple[str, ...]
    finished_length_ids: tuple[str, ...]
    held_ids: tuple[str, ...]


@dataclass(frozen=True)
class HeldBlocks:
    """The KV a prefill worker exports for one HELD request: blocks in position order.

    num_tokens is the prompt length: the KV of positions [0, num_tokens) is valid; the
    first sampled token's KV is not computed (the decode worker computes it).
    """

    request_id: str
    block_ids: tuple[int, ...]
    num_tokens: int
    first_token_id: int
    lease_deadline_s: float


@dataclass(frozen=True)
class SchedulerStats:
    num_waiting: int
    num_running: int
    num_held: int
    num_reserved: int  # decode side: reserved, receiving or verified, not yet running
    num_free_blocks: int
    num_used_blocks: int
    num_cached_blocks: int
    num_total_blocks: int
    num_prefix_query_tokens: int
    num_prefix_hit_tokens: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
