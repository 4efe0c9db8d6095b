"""Property test: no interleaving of lifecycle events leaks, double-frees or corrupts KV.

A hypothesis state machine drives one scheduler (acting as prefill, decode and mixed
worker at once, on a tiny pool so preemption and eviction are frequent) with add,
schedule+update (through the fake paged model, which asserts every context it reads back
is the sequence's true tokens), finish, abort, release, lease expiry, reserve and the
transfer events. After every step it checks the accounting independently of the block
manager's own bookkeeping, and that every output is the reference continuation.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import event as event_note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.handoff import IllegalTransition
from splitserve.engine.scheduler import Scheduler
from splitserve.engine.sequence import FinishReason, Sequence, SequenceStatus
from tests.engine.test_scheduler_paged_model import FakePagedKV, Params, reference_output

NUM_BLOCKS = 10
BLOCK_SIZE = 2
LEASE_S = 5.0
SHARED = [3, 1, 4, 1, 5, 9]

prompts = st.builds(
    lambda head, tail: SHARED[:head] + tail,
    st.sampled_from([0, 2, 4, 6]),
    st.lists(st.integers(0, 9), min_size=1, max_size=8),
)


class SchedulerLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = Scheduler(
            SchedulerConfig(
                max_num_batched_tokens=6,
                max_num_seqs=4,
                max_model_len=20,
                handoff_lease_s=LEASE_S,
            ),
            CacheConfig(num_blocks=NUM_BLOCKS, block_size=BLOCK_SIZE),
        )
        self.kv = FakePagedKV(NUM_BLOCKS, BLOCK_SIZE)
        self.now_s = 0.0
        self.seqs: dict[str, Sequence] = {}

    def _new_id(self) -> str:
        return f"r{len(self.seqs)}"

    def _ids(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.seqs) + ["never-added"])

    def _live(self, status: SequenceStatus) -> list[str]:
        return sorted(rid for rid, seq in self.seqs.items() if seq.status is status)

    @rule(prompt=prompts, prefill_only=st.booleans(), max_tokens=st.integers(1, 8))
    def add(self, prompt: list[int], prefill_only: bool, max_tokens: int) -> None:
        seq = Sequence(self._new_id(), prompt, Params(max_tokens), prefill_only=prefill_only)
        self.s.add(seq)
        self.seqs[seq.request_id] = seq

    @rule()
    def step(self) -> None:
        out = self.s.schedule()
        if out.preempted_ids:
            event_note("preempted")
        if not out.is_empty:
            result = self.s.update(out, self.kv.run(out, self.s), now_s=self.now_s)
            for rid in result.held_ids:
                event_note("held")
                assert self.s.held_blocks(rid).lease_deadline_s == self.now_s + LEASE_S

    @rule()
    def run_three_steps(self) -> None:
        for _ in range(3):
            self.step()

    @rule(data=st.data())
    def finish_running(self, data: st.DataObject) -> None:
        running = self._live(SequenceStatus.RUNNING) + self._live(SequenceStatus.HELD)
        if running:
            rid = data.draw(st.sampled_from(running))
            assert self.s.finish(rid, FinishReason.STOPPED)

    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        rid = data.draw(self._ids())
        seq = self.seqs.get(rid)
        was_live = seq is not None and not seq.status.is_finished
        assert self.s.abort(rid) == was_live
        assert self.s.get(rid) is None

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(self._ids())
        seq = self.seqs.get(rid)
        status = None if seq is None else seq.status
        if (
            seq is not None
            and seq.prefill_only
            and status
            in (
                SequenceStatus.WAITING,
                SequenceStatus.PREEMPTED,
                SequenceStatus.RUNNING,
            )
        ):
            try:
                self.s.release(rid)
            except IllegalTransition:
                return
            raise AssertionError("ack of a request still prefilling was accepted")
        released = self.s.release(rid)
        assert released == (status is SequenceStatus.HELD)
        if released:
            assert seq is not None and seq.status is SequenceStatus.RELEASED

    @rule(dt_s=st.floats(0.0, 6.0))
    def tick(self, dt_s: float) -> None:
        self.now_s += dt_s
        held_before = set(self._live(SequenceStatus.HELD))
        expired = self.s.expire(self.now_s)
        assert set(expired) <= held_before
        for rid in expired:
            event_note("lease expired")
            assert self.seqs[rid].status is SequenceStatus.RELEASED
        for rid in held_before - set(expired):
            assert self.s.held_blocks(rid).lease_deadline_s > self.now_s

    @rule(prompt=prompts, max_tokens=st.integers(2, 8))
    def reserve(self, prompt: list[int], max_tokens: int) -> None:
        first = reference_output(prompt, 1)
        seq = Sequence(self._new_id(), prompt, Params(max_tokens), output_token_ids=first)
        used_before = self.s.stats().num_used_blocks
        block_ids = self.s.reserve(seq)
        if block_ids is None:
            assert self.s.stats().num_used_blocks == used_before and seq.block_ids == []
            return
        assert len(block_ids) == -(-len(prompt) // BLOCK_SIZE)
        self.seqs[seq.request_id] = seq

    @rule(data=st.data(), kind=st.sampled_from(["next", "next", "next", "fail", "any"]))
    def transfer_event(self, data: st.DataObject, kind: str) -> None:
        """Mostly the next legal event of a reserved request; sometimes fail or a random one."""
        candidates = sorted(rid for rid, seq in self.seqs.items() if seq.status.is_receiving_kv)
        if not candidates:
            return
        rid = data.draw(st.sampled_from(candidates))
        seq = self.seqs[rid]
        if kind == "fail":
            assert self.s.fail(rid) and seq.status is SequenceStatus.FINISHED_FAILED
            return
        events = {
            SequenceStatus.RESERVED: "receiving",
            SequenceStatus.RECEIVING: "verified",
            SequenceStatus.VERIFIED: "activate",
        }
        legal = events[seq.status]
        name = legal if kind == "next" else data.draw(st.sampled_from(sorted(events.values())))
        action = {
            "receiving": self.s.mark_receiving,
            "verified": self.s.mark_verified,
            "activate": self.s.activate,
        }[name]
        if name != legal:
            before = seq.status
            try:
                action(rid)
            except IllegalTransition:
                assert seq.status is before
                return
            raise AssertionError(f"{name} accepted in {before}")
        if name == "verified":  # the bytes "arrived": the prompt's KV is now in place
            self.kv.write(seq.block_ids, 0, seq.prompt_token_ids)
        if name == "activate":
            event_note("activated")
        assert action(rid)

    @invariant()
    def accounting_holds(self) -> None:
        self.s.check_invariants()
        stats = self.s.stats()
        bm = self.s.block_manager
        live = [seq for seq in self.seqs.values() if not seq.status.is_finished]
        refs = [bm.ref_count(b) for b in range(NUM_BLOCKS)]
        assert sum(refs) == sum(len(seq.block_ids) for seq in live)
        assert stats.num_used_blocks == len({b for seq in live for b in seq.block_ids})
        assert stats.num_free_blocks + stats.num_used_blocks == NUM_BLOCKS
        assert stats.num_held == len(self._live(SequenceStatus.HELD))
        for rid, seq in self.seqs.items():
            assert (self.s.get(rid) is seq) == (not seq.status.is_finished)
            if seq.status.is_finished:
                assert seq.block_ids == []

    @invariant()
    def outputs_are_the_reference_continuation(self) -> None:
        for seq in self.seqs.values():
            num_out = len(seq.output_token_ids)
            assert seq.output_token_ids == reference_output(seq.prompt_token_ids, num_out)

    def teardown(self) -> None:
        for rid in list(self.seqs):
            self.s.abort(rid)
        stats = self.s.stats()
        assert stats.num_used_blocks == 0
        assert stats.num_free_blocks == NUM_BLOCKS
        assert stats.num_held == stats.num_running == stats.num_waiting == 0
        assert not self.s.has_unfinished()
        self.s.check_invariants()


SchedulerLifecycle.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_lifecycle = SchedulerLifecycle.TestCase
