"""Continuous-batching scheduler: which tokens of which sequences each step computes.

Pure logic over plain data: it never touches the model, a tensor or the clock (times are
passed in). The algorithm, once per step, `schedule()`:

1. Decodes first. Every RUNNING sequence with exactly one uncomputed token (the last
   sampled one) gets 1 token of the step's budget, in arrival order, while budget lasts.
   It may need one more block; when none is free, the latest-arrived RUNNING sequence is
   preempted (its blocks freed, `num_computed_tokens` reset to 0: it will recompute
   prompt + outputs, usually hitting the prefix cache) and put back in the waiting queue,
   which is ordered by arrival so it lands in front of every never-admitted request;
   repeat until the block is found or the sequence preempted itself.
2. Prefill chunks of RUNNING sequences admitted in earlier steps (chunked prefill), in
   arrival order: each gets min(uncomputed tokens, remaining budget). Their blocks were
   all allocated at admission, so this never preempts.
3. Admission, FCFS, only if nothing was preempted this step (admitting while evicting
   would thrash): while budget is left and fewer than `max_num_seqs` sequences run (or
   are reserved for incoming KV), the head of the waiting queue looks up its longest
   cached prefix of full blocks (never the whole sequence: the last token is always
   computed so its logits exist), and is admitted only if blocks for ALL its tokens can
   be allocated now (admission is bounded by free blocks; chunks never stall on blocks
   later). It computes min(uncomputed tokens, budget) tokens this step; without chunked
   prefill a head that does not fit the remaining budget waits for the next step. The
   first head that cannot be admitted stops admission (strict FCFS, no overtaking).

A step's result is a `SchedulerOutput`: per sequence the token ids to compute, their start
position (= tokens already computed) and the block table, plus whether to sample.
HELD (prefill-only, finished prompt) and reserved (decode side, KV incoming) sequences own
blocks but are never scheduled or preempted.

Call order the engine loop follows (one thread):

    out = scheduler.schedule()          # raises if the previous output was not updated
    if not out.is_empty:
        sampled = run model + sampler on out.scheduled   # {request_id: token} for items
                                                         # with sample=True, nothing else
        res = scheduler.update(out, sampled, now_s=clock())
        for request_id in res.appended_ids:             # got a token: stream it, then
            stop token / stop string -> scheduler.finish(request_id, FinishReason.STOPPED)
        # res.finished_length_ids already ended (max_tokens / length limit, freed);
        # res.held_ids (prefill-only) are HELD: held_blocks(id) -> export, emit handoff.
    scheduler.expire(now_s=clock())     # frees HELD requests whose lease ran out; when
    # idle (not has_work()), wake by scheduler.next_lease_deadline_s() to expire again.
    # Between steps, any time: add(), abort(), release(), reserve(), mark_receiving(),
    # mark_verified(), activate(), fail(), finish(); an abort between schedule() and
    # update() is safe (update skips it). Sequences in out.preempted_ids lost their KV;
    # the engine needs to do nothing for them (they recompute when readmitted).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.handoff import DecodeHandoff, PrefillHandoff
from splitserve.engine.sched_lifecycle import LifecycleOps
from splitserve.engine.sched_output import (
    ScheduledSequence,
    SchedulerOutput,
    UpdateResult,
)
from splitserve.engine.sequence import FinishReason, Sequence, SequenceStatus, as_token_id


def _arrival(seq: Sequence) -> int:
    return seq.arrival_index


class Scheduler(LifecycleOps):
    """FCFS continuous batching with chunked prefill, preemption and P/D handoff states."""

    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig) -> None:
        self.config = scheduler_config
        self.cache_config = cache_config
        self.block_manager = BlockManager(cache_config)
        # A sequence can never hold more tokens than the model or the whole pool allows.
        self.max_len = min(scheduler_config.max_model_len, cache_config.num_token_slots)
        self._seqs: dict[str, Sequence] = {}  # every live (unfinished) sequence
        self._waiting: list[Sequence] = []  # WAITING / PREEMPTED, by arrival
        self._running: list[Sequence] = []  # RUNNING, by arrival
        self._prefill_handoffs: dict[str, PrefillHandoff] = {}
        self._decode_handoffs: dict[str, DecodeHandoff] = {}
        self._next_arrival = 0
        self._step_index = 0
        self._pending: SchedulerOutput | None = None

    # ---- requests in ------------------------------------------------------------

    def add(self, seq: Sequence) -> None:
        """Queue a new request (status WAITING). ValueError if it can never run."""
        self._check_new(seq)
        if seq.num_output_tokens:
            raise ValueError(f"request {seq.request_id}: a new sequence has no output yet")
        self._register(seq)
        seq.status = SequenceStatus.WAITING
        if seq.prefill_only:
            self._prefill_handoffs[seq.request_id] = PrefillHandoff(seq.request_id)
        bisect.insort(self._waiting, seq, key=_arrival)

    def get(self, request_id: str) -> Sequence | None:
        return self._seqs.get(request_id)

    # ---- one step -----------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Decide this step's work (see the module docstring); allocates blocks."""
        if self._pending is not None:
            raise RuntimeError("schedule() called again before update() of the last step")
        budget = self.config.max_num_batched_tokens
        work: list[tuple[Sequence, int]] = []
        preempted: list[str] = []
        for seq in list(self._running):
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.num_uncomputed_tokens != 1:
                continue
            if self._grow_or_preempt(seq, preempted):
                work.append((seq, 1))
                budget -= 1
        for seq in self._running:
            if budget == 0:
                break
            if seq.num_uncomputed_tokens > 1:
                num_new = min(seq.num_uncomputed_tokens, budget)
                work.append((seq, num_new))
                budget -= num_new
        if not preempted:
            budget = self._admit(budget, work)
        self._step_index += 1
        out = SchedulerOutput(
            step_index=self._step_index,
            scheduled=tuple(self._describe(seq, num_new) for seq, num_new in work),
            preempted_ids=tuple(preempted),
        )
        self._pending = None if out.is_empty else out
        return out

    def update(
        self, output: SchedulerOutput, sampled: Mapping[str, int | None], *, now_s: float
    ) -> UpdateResult:
        """Record that the model computed `output` and the sampler drew `sampled`.

        Advances each scheduled sequence's `num_computed_tokens`, appends the sampled token
        where `sample` was true (a token for a partial chunk is an error), registers newly
        full blocks in the prefix cache, finishes sequences at max_tokens / the length
        limit, and moves prefill-only sequences that got their first token to HELD with a
        lease until `now_s + handoff_lease_s`. Sequences aborted or finished since
        `schedule()` are skipped.
        """
        if output.is_empty and output.step_index == self._step_index:
            return UpdateResult(appended_ids=(), finished_length_ids=(), held_ids=())
        if output is not self._pending:
            raise RuntimeError("update() needs the output of the latest non-empty schedule()")
        # Validate everything before changing anything: a bad call leaves no half-update.
        live = [(item, seq) for item in output.scheduled if (seq := self._live(item.request_id))]
        tokens = [
            self._check_sampled(item, seq, sampled.get(item.request_id)) for item, seq in live
        ]
        self._pending = None
        appended: list[str] = []
        finished: list[str] = []
        held: list[str] = []
        for (item, seq), token_id in zip(live, tokens, strict=True):
            seq.num_computed_tokens += item.num_new_tokens
            self.block_manager.cache_computed_blocks(seq)
            if token_id is None:
                continue
            seq.output_token_ids.append(token_id)
            appended.append(seq.request_id)
            max_tokens = seq.max_tokens
            at_max = max_tokens is not None and seq.num_output_tokens >= max_tokens
            if at_max or seq.num_tokens >= self.max_len:
                self._end(seq, SequenceStatus.FINISHED_LENGTH)
                finished.append(seq.request_id)
            elif seq.prefill_only:
                self._hold(seq, now_s)
                held.append(seq.request_id)
        return UpdateResult(
            appended_ids=tuple(appended), finished_length_ids=tuple(finished), held_ids=tuple(held)
        )

    # ---- requests out ---------------------------------------------------------------

    def finish(self, request_id: str, reason: FinishReason) -> bool:
        """End a request the engine decided is done; frees its blocks exactly once.

        Works on WAITING / RUNNING / HELD sequences (a HELD one is released: its first
        token already ended it). False if the id is unknown or already finished.
        """
        seq = self._seqs.get(request_id)
        if seq is None:
            return False
        if reason is FinishReason.ABORTED:
            return self.abort(request_id)
        if seq.status.is_receiving_kv:
            if reason is FinishReason.FAILED:
                return self.fail(request_id)
            raise ValueError(f"{request_id} has not decoded yet: cannot finish as {reason}")
        self._end(seq, reason.status)
        return True

    def abort(self, request_id: str) -> bool:
        """Abort in any state; idempotent. True if this call ended a live request."""
        seq = self._seqs.get(request_id)
        if seq is None:
            return False
        self._end(seq, SequenceStatus.FINISHED_ABORTED)
        return True

    # ---- introspection ----------------------------------------------------------------

    def has_unfinished(self) -> bool:
        """Any live request (queued, running, held or reserved)."""
        return bool(self._seqs)

    def has_work(self) -> bool:
        """Whether `schedule()` can produce work now (something queued or running)."""
        return bool(self._waiting or self._running)

    # ---- internals ----------------------------------------------------------------------

    def _live(self, request_id: str) -> Sequence | None:
        """The RUNNING sequence of that id, None if it was aborted/finished meanwhile."""
        seq = self._seqs.get(request_id)
        return seq if seq is not None and seq.status is SequenceStatus.RUNNING else None

    @staticmethod
    def _check_sampled(item: ScheduledSequence, seq: Sequence, token_id: object) -> int | None:
        rid = item.request_id
        if seq.num_computed_tokens != item.num_computed_tokens:
            raise RuntimeError(f"{rid}: progress changed since schedule()")
        if item.sample and token_id is None:
            raise ValueError(f"no sampled token for {rid}")
        if not item.sample and token_id is not None:
            raise ValueError(f"{rid} computed a partial chunk: nothing to sample")
        return None if token_id is None else as_token_id(token_id, f"sampled token of {rid}")

    def _grow_or_preempt(self, seq: Sequence, preempted: list[str]) -> bool:
        """Blocks for seq's next token, preempting latest arrivals; False if seq itself went."""
        while not self.block_manager.allocate(seq, seq.num_tokens):
            victim = self._running[-1]
            self._preempt(victim)
            preempted.append(victim.request_id)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self._running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.PREEMPTED
        bisect.insort(self._waiting, seq, key=_arrival)

    def _admit(self, budget: int, work: list[tuple[Sequence, int]]) -> int:
        bm = self.block_manager
        while self._waiting and budget > 0:
            if len(self._running) + self._num_reserved() >= self.config.max_num_seqs:
                break
            seq = self._waiting[0]
            cached = bm.find_cached_prefix(seq)
            num_uncomputed = seq.num_tokens - len(cached) * bm.block_size
            if num_uncomputed > budget and not self.config.enable_chunked_prefill:
                break
            if not bm.allocate(seq, seq.num_tokens, cached):
                break
            self._waiting.pop(0)
            seq.num_computed_tokens = len(cached) * bm.block_size
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self._running, seq, key=_arrival)
            num_new = min(num_uncomputed, budget)
            work.append((seq, num_new))
            budget -= num_new
        return budget

    def _describe(self, seq: Sequence, num_new: int) -> ScheduledSequence:
        start = seq.num_computed_tokens
        return ScheduledSequence(
            request_id=seq.request_id,
            token_ids=tuple(seq.token_ids_slice(start, start + num_new)),
            num_computed_tokens=start,
            block_ids=tuple(seq.block_ids),
            sample=start + num_new == seq.num_tokens,
        )
