"""Request lifecycle half of the Scheduler: registration, ending, the P/D handoff, and its
bookkeeping (stats, invariant checks).

Split out of scheduler.py so each file holds one job; `Scheduler` inherits these methods
and owns the attributes declared below.

Prefill worker (a `prefill_only` sequence): `add` -> steps -> `update` moves it to HELD
(lease deadline = now_s + handoff_lease_s) and lists it in `UpdateResult.held_ids` ->
`held_blocks(request_id)` for export -> exactly one of `release` (decode acked), `abort`,
`expire(now_s)`, `finish` ends it and frees its blocks once.

Decode worker: `reserve(seq)` (seq carries the prompt and the first token the prefill
worker sampled) returns block ids to receive into -> `mark_receiving` -> `mark_verified`
(checksums matched) -> `activate` (RUNNING with num_computed_tokens = prompt length: the
next step computes the first token's KV and samples the second). A failed or timed-out
transfer: `fail`, which frees the reservation. `abort` works in every state.
"""

from __future__ import annotations

import bisect

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.handoff import (
    DecodeHandoff,
    DecodeState,
    IllegalTransition,
    PrefillHandoff,
    PrefillState,
    ReleaseReason,
)
from splitserve.engine.sched_output import HeldBlocks, SchedulerStats
from splitserve.engine.sequence import Sequence, SequenceStatus

_INCOMING = (DecodeState.RESERVED, DecodeState.RECEIVING, DecodeState.VERIFIED)
_DECODE_END = {
    SequenceStatus.FINISHED_STOPPED: DecodeState.FINISHED,
    SequenceStatus.FINISHED_LENGTH: DecodeState.FINISHED,
    SequenceStatus.FINISHED_ABORTED: DecodeState.ABORTED,
    SequenceStatus.FINISHED_FAILED: DecodeState.FAILED,
}


def _arrival(seq: Sequence) -> int:
    return seq.arrival_index


class LifecycleOps:
    config: SchedulerConfig
    cache_config: CacheConfig
    block_manager: BlockManager
    max_len: int
    _seqs: dict[str, Sequence]
    _waiting: list[Sequence]
    _running: list[Sequence]
    _prefill_handoffs: dict[str, PrefillHandoff]
    _decode_handoffs: dict[str, DecodeHandoff]
    _next_arrival: int

    # ---- bookkeeping ----------------------------------------------------------------

    def stats(self) -> SchedulerStats:
        bm = self.block_manager
        return SchedulerStats(
            num_waiting=len(self._waiting),
            num_running=len(self._running),
            num_held=self._num_held(),
            num_reserved=self._num_reserved(),
            num_free_blocks=bm.num_free_blocks,
            num_used_blocks=bm.num_used_blocks,
            num_cached_blocks=bm.num_cached_blocks,
            num_total_blocks=bm.num_total_blocks,
            num_prefix_query_tokens=bm.num_prefix_query_tokens,
            num_prefix_hit_tokens=bm.num_prefix_hit_tokens,
        )

    def check_invariants(self) -> None:
        """Raise if the queues or the block accounting are inconsistent (tests, debug)."""
        queued = [s for s in self._seqs.values() if s.status.is_queued]
        running = [s for s in self._seqs.values() if s.status is SequenceStatus.RUNNING]
        if sorted(map(id, queued)) != sorted(map(id, self._waiting)):
            raise AssertionError("waiting queue differs from queued sequences")
        if sorted(map(id, running)) != sorted(map(id, self._running)):
            raise AssertionError("running queue differs from running sequences")
        for queue in (self._waiting, self._running):
            if [s.arrival_index for s in queue] != sorted(s.arrival_index for s in queue):
                raise AssertionError("a queue is out of arrival order")
        for seq in self._seqs.values():
            if seq.status.is_queued and (seq.block_ids or seq.num_computed_tokens):
                raise AssertionError(f"{seq.request_id} is queued but holds blocks")
            if seq.num_computed_tokens > seq.num_tokens:
                raise AssertionError(f"{seq.request_id} computed more tokens than it has")
        self.block_manager.check_consistency(s.block_ids for s in self._seqs.values())

    # ---- prefill side ---------------------------------------------------------------

    def held_blocks(self, request_id: str) -> HeldBlocks:
        """The pinned KV of a HELD request, for export. KeyError unless it is HELD."""
        seq = self._seqs.get(request_id)
        handoff = self._prefill_handoffs.get(request_id)
        if seq is None or handoff is None or handoff.state is not PrefillState.HELD:
            raise KeyError(f"request {request_id!r} is not held")
        assert handoff.lease_deadline_s is not None
        return HeldBlocks(
            request_id=request_id,
            block_ids=tuple(seq.block_ids),
            num_tokens=seq.num_computed_tokens,
            first_token_id=seq.output_token_ids[0],
            lease_deadline_s=handoff.lease_deadline_s,
        )

    def release(self, request_id: str) -> bool:
        """The decode worker acked: free the held blocks. False if already released.

        IllegalTransition if the request is live but not HELD (an ack before the prompt
        was computed is a protocol error).
        """
        seq = self._seqs.get(request_id)
        handoff = self._prefill_handoffs.get(request_id)
        if seq is None or handoff is None:
            return False
        if handoff.state is not PrefillState.HELD:
            raise IllegalTransition(f"{request_id}: ack in state {handoff.state.value}")
        self._end(seq, SequenceStatus.RELEASED, ReleaseReason.ACKED)
        return True

    def expire(self, now_s: float) -> list[str]:
        """Release every HELD request whose lease deadline is <= now_s; their ids."""
        expired = [rid for rid, h in self._prefill_handoffs.items() if h.is_expired(now_s)]
        for rid in expired:
            self._end(self._seqs[rid], SequenceStatus.RELEASED, ReleaseReason.EXPIRED)
        return expired

    def next_lease_deadline_s(self) -> float | None:
        """Earliest deadline among HELD requests (when an idle loop must call expire)."""
        deadlines = [
            h.lease_deadline_s
            for h in self._prefill_handoffs.values()
            if h.state is PrefillState.HELD and h.lease_deadline_s is not None
        ]
        return min(deadlines, default=None)

    def _hold(self, seq: Sequence, now_s: float) -> None:
        self._prefill_handoffs[seq.request_id].hold(now_s, self.config.handoff_lease_s)
        self._running.remove(seq)
        seq.status = SequenceStatus.HELD

    # ---- decode side ----------------------------------------------------------------

    def reserve(self, seq: Sequence) -> list[int] | None:
        """Allocate blocks for seq's prompt KV before any byte moves (status RESERVED).

        seq holds the prompt and exactly one output token (sampled by the prefill
        worker). Returns the block ids (position order) to receive into, or None when
        the blocks or a batch slot are not free now (nothing changed; retry or report).
        ValueError if the request can never run here.
        """
        self._check_new(seq)
        rid = seq.request_id
        if seq.prefill_only or seq.num_output_tokens != 1:
            raise ValueError(f"request {rid}: a decode reservation needs exactly 1 output token")
        max_tokens = seq.max_tokens
        if seq.num_tokens >= self.max_len or (max_tokens is not None and max_tokens <= 1):
            raise ValueError(f"request {rid}: already at its length limit, nothing to decode")
        if len(self._running) + self._num_reserved() >= self.config.max_num_seqs:
            return None
        if not self.block_manager.allocate(seq, seq.num_prompt_tokens):
            return None
        self._register(seq)
        seq.status = SequenceStatus.RESERVED
        self._decode_handoffs[rid] = DecodeHandoff(rid)
        return list(seq.block_ids)

    def mark_receiving(self, request_id: str) -> bool:
        """KV bytes started arriving. False if the request is gone (aborted)."""
        return self._advance(request_id, DecodeState.RECEIVING, SequenceStatus.RECEIVING)

    def mark_verified(self, request_id: str) -> bool:
        """All KV arrived and its checksums match. False if the request is gone."""
        return self._advance(request_id, DecodeState.VERIFIED, SequenceStatus.VERIFIED)

    def activate(self, request_id: str) -> bool:
        """Start decoding a VERIFIED request; its imported full blocks join the prefix cache.

        False if the request is gone; IllegalTransition unless VERIFIED.
        """
        if not self._advance(request_id, DecodeState.DECODING, SequenceStatus.RUNNING):
            return False
        seq = self._seqs[request_id]
        seq.num_computed_tokens = seq.num_prompt_tokens
        self.block_manager.cache_computed_blocks(seq)
        bisect.insort(self._running, seq, key=_arrival)
        return True

    def fail(self, request_id: str) -> bool:
        """The transfer failed, timed out or did not verify: free the reservation.

        False if the request is gone; IllegalTransition once it is decoding (use
        `finish(request_id, FinishReason.FAILED)` for an engine error then).
        """
        seq = self._seqs.get(request_id)
        handoff = self._decode_handoffs.get(request_id)
        if seq is None or handoff is None:
            return False
        if handoff.state not in _INCOMING:
            raise IllegalTransition(f"{request_id}: transfer failure in {handoff.state.value}")
        self._end(seq, SequenceStatus.FINISHED_FAILED)
        return True

    def _advance(self, request_id: str, state: DecodeState, status: SequenceStatus) -> bool:
        seq = self._seqs.get(request_id)
        handoff = self._decode_handoffs.get(request_id)
        if seq is None or handoff is None:
            if seq is not None:
                raise IllegalTransition(f"{request_id} is not a decode handoff")
            return False
        handoff.advance(state)
        seq.status = status
        return True

    def _num_reserved(self) -> int:
        return sum(1 for h in self._decode_handoffs.values() if h.state in _INCOMING)

    def _num_held(self) -> int:
        return sum(1 for h in self._prefill_handoffs.values() if h.state is PrefillState.HELD)

    # ---- both ---------------------------------------------------------------------------

    def _check_new(self, seq: Sequence) -> None:
        rid = seq.request_id
        if rid in self._seqs:
            raise ValueError(f"request id {rid!r} is already in use")
        if seq.num_computed_tokens or seq.block_ids or seq.status.is_finished:
            raise ValueError(f"request {rid}: sequence was already scheduled elsewhere")
        if seq.num_prompt_tokens > self.config.max_model_len:
            raise ValueError(
                f"request {rid}: prompt has {seq.num_prompt_tokens} tokens, more than "
                f"max_model_len {self.config.max_model_len}"
            )
        if seq.num_prompt_tokens > self.cache_config.num_token_slots:
            raise ValueError(
                f"request {rid}: prompt needs "
                f"{self.block_manager.num_blocks_for(seq.num_prompt_tokens)} KV blocks, "
                f"more than the {self.cache_config.num_blocks} that exist"
            )

    def _register(self, seq: Sequence) -> None:
        seq.arrival_index = self._next_arrival
        self._next_arrival += 1
        self._seqs[seq.request_id] = seq

    def _end(
        self, seq: Sequence, status: SequenceStatus, reason: ReleaseReason | None = None
    ) -> None:
        """Leave every queue, settle the handoff machine, free blocks once, forget seq."""
        rid = seq.request_id
        # Settle the machines first: an illegal transition raises before anything changed.
        prefill = self._prefill_handoffs.get(rid)
        if prefill is not None:
            aborted = status is SequenceStatus.FINISHED_ABORTED
            default = ReleaseReason.ABORTED if aborted else ReleaseReason.FINISHED
            prefill.release(reason or default)
            del self._prefill_handoffs[rid]
        decode = self._decode_handoffs.get(rid)
        if decode is not None:
            if not decode.is_terminal:
                decode.advance(_DECODE_END[status])
            del self._decode_handoffs[rid]
        if seq.status.is_queued:
            self._waiting.remove(seq)
        elif seq.status is SequenceStatus.RUNNING:
            self._running.remove(seq)
        self.block_manager.free(seq)
        seq.status = status
        del self._seqs[rid]
