"""P/D handoff lifecycle: the state machines alone, then through the scheduler."""

from __future__ import annotations

import pytest

from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.handoff import (
    DecodeHandoff,
    DecodeState,
    IllegalTransition,
    PrefillHandoff,
    PrefillState,
    ReleaseReason,
)
from splitserve.engine.scheduler import Scheduler
from splitserve.engine.sequence import FinishReason, Sequence, SequenceStatus
from tests.engine.test_scheduler_paged_model import (
    FakePagedKV,
    Params,
    drive,
    reference_output,
)

BLOCK_SIZE = 4
LEASE_S = 10.0


def _scheduler(num_blocks: int = 16, budget: int = 64, max_num_seqs: int = 8) -> Scheduler:
    return Scheduler(
        SchedulerConfig(
            max_num_batched_tokens=budget,
            max_num_seqs=min(max_num_seqs, budget),
            max_model_len=64,
            handoff_lease_s=LEASE_S,
        ),
        CacheConfig(num_blocks=num_blocks, block_size=BLOCK_SIZE),
    )


def _prefill_to_held(s: Scheduler, rid: str, prompt: list[int], now_s: float = 100.0) -> int:
    """Add a prefill-only request and step until it is HELD; returns the first token."""
    s.add(Sequence(rid, prompt, Params(8), prefill_only=True))
    while True:
        out = s.schedule()
        result = s.update(out, {i.request_id: 9 for i in out.scheduled if i.sample}, now_s=now_s)
        if rid in result.held_ids:
            return 9


# ---- the machines alone -------------------------------------------------------------


def test_prefill_machine_releases_exactly_once() -> None:
    h = PrefillHandoff("r")
    h.hold(now_s=5.0, lease_s=2.0)
    assert h.state is PrefillState.HELD and h.lease_deadline_s == 7.0
    assert not h.is_expired(6.99) and h.is_expired(7.0)
    assert h.release(ReleaseReason.ACKED)
    assert not h.release(ReleaseReason.EXPIRED)  # an expiry racing the ack frees nothing
    assert not h.release(ReleaseReason.ABORTED)
    assert h.release_reason is ReleaseReason.ACKED
    assert not h.is_expired(100.0)


def test_prefill_machine_rejects_illegal_events() -> None:
    h = PrefillHandoff("r")
    with pytest.raises(IllegalTransition, match="acked"):
        h.release(ReleaseReason.ACKED)  # ack before the prompt was even computed
    with pytest.raises(IllegalTransition, match="expired"):
        h.release(ReleaseReason.EXPIRED)
    h.hold(0.0, 1.0)
    with pytest.raises(IllegalTransition, match="hold"):
        h.hold(0.0, 1.0)
    assert h.release(ReleaseReason.EXPIRED)
    with pytest.raises(IllegalTransition, match="hold"):
        h.hold(0.0, 1.0)


def test_prefill_machine_abort_while_prefilling_releases() -> None:
    h = PrefillHandoff("r")
    assert h.release(ReleaseReason.ABORTED)
    assert h.state is PrefillState.RELEASED


def test_decode_machine_happy_path_and_illegal_skips() -> None:
    h = DecodeHandoff("r")
    with pytest.raises(IllegalTransition):
        h.advance(DecodeState.VERIFIED)  # bytes never arrived
    with pytest.raises(IllegalTransition):
        h.advance(DecodeState.DECODING)  # nothing decodes before VERIFIED
    for state in (DecodeState.RECEIVING, DecodeState.VERIFIED, DecodeState.DECODING):
        h.advance(state)
    h.advance(DecodeState.FINISHED)
    assert h.is_terminal
    assert not h.abort()
    with pytest.raises(IllegalTransition):
        h.advance(DecodeState.RECEIVING)


@pytest.mark.parametrize(
    "path", [(), (DecodeState.RECEIVING,), (DecodeState.RECEIVING, DecodeState.VERIFIED)]
)
def test_decode_machine_abort_and_fail_from_every_live_state(path: tuple[DecodeState, ...]) -> None:
    aborted, failed = DecodeHandoff("a"), DecodeHandoff("f")
    for state in path:
        aborted.advance(state)
        failed.advance(state)
    assert aborted.abort() and not aborted.abort()
    failed.advance(DecodeState.FAILED)
    assert failed.is_terminal and not failed.abort()


# ---- prefill side through the scheduler ------------------------------------------------


def test_prefill_only_request_is_held_with_its_blocks_and_lease() -> None:
    s = _scheduler()
    prompt = list(range(10))
    first = _prefill_to_held(s, "r", prompt, now_s=100.0)
    seq = s.get("r")
    assert seq is not None and seq.status is SequenceStatus.HELD
    held = s.held_blocks("r")
    assert held.block_ids == tuple(seq.block_ids) and len(held.block_ids) == 3
    assert held.num_tokens == 10 and held.first_token_id == first
    assert held.lease_deadline_s == 100.0 + LEASE_S
    stats = s.stats()
    assert (stats.num_held, stats.num_running, stats.num_used_blocks) == (1, 0, 3)
    assert s.schedule().is_empty  # held requests are never decoded here
    assert s.has_unfinished() and not s.has_work()


def test_release_frees_held_blocks_exactly_once() -> None:
    s = _scheduler()
    _prefill_to_held(s, "r", list(range(10)))
    assert s.release("r")
    assert not s.release("r")
    assert not s.abort("r")
    assert s.expire(now_s=1e9) == []
    stats = s.stats()
    assert (stats.num_held, stats.num_used_blocks) == (0, 0)
    assert stats.num_free_blocks == stats.num_total_blocks
    with pytest.raises(KeyError):
        s.held_blocks("r")


def test_lease_expiry_releases_and_a_late_ack_is_a_no_op() -> None:
    s = _scheduler()
    _prefill_to_held(s, "early", list(range(6)), now_s=0.0)
    _prefill_to_held(s, "late", list(range(20, 26)), now_s=5.0)
    assert s.expire(now_s=LEASE_S - 0.001) == []
    assert s.expire(now_s=LEASE_S) == ["early"]
    assert s.stats().num_held == 1
    assert not s.release("early")  # decode acked after expiry: nothing freed twice
    assert s.expire(now_s=5.0 + LEASE_S) == ["late"]
    assert s.stats().num_used_blocks == 0


def test_abort_and_finish_release_a_held_request() -> None:
    s = _scheduler()
    _prefill_to_held(s, "a", list(range(6)))
    _prefill_to_held(s, "f", list(range(30, 36)))
    assert s.abort("a") and not s.abort("a")
    # The engine saw a stop token as the first token: no handoff, just free.
    assert s.finish("f", FinishReason.STOPPED)
    assert s.stats().num_used_blocks == 0 and s.stats().num_held == 0


def test_ack_for_a_request_still_prefilling_is_illegal() -> None:
    s = _scheduler(budget=4)
    s.add(Sequence("r", list(range(10)), Params(8), prefill_only=True))
    out = s.schedule()
    s.update(out, {}, now_s=0.0)  # partial chunk
    with pytest.raises(IllegalTransition):
        s.release("r")
    with pytest.raises(KeyError):
        s.held_blocks("r")
    assert s.abort("r")
    assert s.stats().num_used_blocks == 0


def test_prefill_only_with_max_tokens_one_finishes_instead_of_holding() -> None:
    s = _scheduler()
    seq = Sequence("r", [1, 2, 3], Params(1), prefill_only=True)
    s.add(seq)
    out = s.schedule()
    result = s.update(out, {"r": 4}, now_s=0.0)
    assert result.finished_length_ids == ("r",) and result.held_ids == ()
    assert seq.status is SequenceStatus.FINISHED_LENGTH
    assert s.stats().num_used_blocks == 0


def test_held_blocks_are_never_preempted() -> None:
    # 4 blocks: the held request pins 2; the decoder needs a 3rd and then a 4th ...
    s = _scheduler(num_blocks=4)
    _prefill_to_held(s, "held", list(range(8)))
    s.add(Sequence("dec", list(range(50, 57)), Params(None)))
    preempted: list[str] = []
    for _ in range(4):
        out = s.schedule()
        preempted += out.preempted_ids
        if not out.is_empty:
            s.update(out, {i.request_id: 1 for i in out.scheduled if i.sample}, now_s=0.0)
        s.check_invariants()
    # ... which it cannot get while the other is held: it preempts itself and waits.
    assert preempted == ["dec"]
    assert s.get("held") is not None and s.get("held").status is SequenceStatus.HELD  # type: ignore[union-attr]
    assert len(s.held_blocks("held").block_ids) == 2
    assert s.release("held")
    out = s.schedule()
    assert [i.request_id for i in out.scheduled] == ["dec"]


# ---- decode side through the scheduler --------------------------------------------------


def _decode_seq(rid: str, prompt: list[int], first: int, max_tokens: int = 6) -> Sequence:
    return Sequence(rid, prompt, Params(max_tokens), output_token_ids=[first])


def test_reserved_request_decodes_only_after_verified_and_activated() -> None:
    s = _scheduler()
    prompt = list(range(10))
    block_ids = s.reserve(_decode_seq("r", prompt, first=42))
    assert block_ids is not None and len(block_ids) == 3
    assert s.stats().num_reserved == 1 and s.stats().num_used_blocks == 3
    assert s.schedule().is_empty
    assert s.mark_receiving("r")
    assert s.schedule().is_empty
    assert s.mark_verified("r")
    assert s.schedule().is_empty  # verified but not activated: still nothing decodes
    assert s.activate("r")
    out = s.schedule()
    (item,) = out.scheduled
    # The first token's KV is computed here, at position = prompt length; it samples the 2nd.
    assert (item.num_computed_tokens, item.token_ids, item.sample) == (10, (42,), True)
    assert item.block_ids[:3] == tuple(block_ids)
    s.update(out, {"r": 43}, now_s=0.0)
    seq = s.get("r")
    assert seq is not None and seq.output_token_ids == [42, 43]


def test_activate_before_verified_is_illegal() -> None:
    s = _scheduler()
    assert s.reserve(_decode_seq("r", [1, 2, 3], first=4)) is not None
    with pytest.raises(IllegalTransition):
        s.activate("r")
    assert s.mark_receiving("r")
    with pytest.raises(IllegalTransition):
        s.activate("r")
    with pytest.raises(IllegalTransition):
        s.mark_receiving("r")
    s.check_invariants()


def test_failed_transfer_frees_the_reservation() -> None:
    s = _scheduler()
    for rid, steps in (("a", 0), ("b", 1), ("c", 2)):
        assert s.reserve(_decode_seq(rid, list(range(9)), first=1)) is not None
        if steps >= 1:
            s.mark_receiving(rid)
        if steps >= 2:
            s.mark_verified(rid)
        assert s.fail(rid) and not s.fail(rid)
    assert s.stats().num_used_blocks == 0 and s.stats().num_reserved == 0
    assert not s.mark_verified("c")  # a late transport event for a gone request


def test_fail_after_activation_is_illegal_but_finish_failed_works() -> None:
    s = _scheduler()
    s.reserve(_decode_seq("r", [1, 2, 3], first=4))
    s.mark_receiving("r")
    s.mark_verified("r")
    s.activate("r")
    with pytest.raises(IllegalTransition):
        s.fail("r")
    assert s.finish("r", FinishReason.FAILED)
    assert s.stats().num_used_blocks == 0


def test_reserve_returns_none_when_blocks_or_slots_are_short() -> None:
    s = _scheduler(num_blocks=4, max_num_seqs=2)
    assert s.reserve(_decode_seq("a", list(range(12)), first=0)) is not None  # 3 blocks
    assert s.reserve(_decode_seq("b", list(range(8)), first=0)) is None  # needs 2, 1 free
    assert s.get("b") is None
    assert s.reserve(_decode_seq("c", list(range(3)), first=0)) is not None
    assert s.reserve(_decode_seq("d", [1], first=0)) is None  # max_num_seqs reached
    s.add(Sequence("w", [5], Params(3)))
    assert s.schedule().is_empty  # reservations count against max_num_seqs
    s.check_invariants()


def test_reserve_rejects_requests_with_nothing_to_decode() -> None:
    s = _scheduler()
    with pytest.raises(ValueError, match="exactly 1 output token"):
        s.reserve(Sequence("r", [1, 2], Params(4)))
    with pytest.raises(ValueError, match="length limit"):
        s.reserve(_decode_seq("r", [1, 2], first=3, max_tokens=1))
    with pytest.raises(ValueError, match="max_model_len"):
        s.reserve(_decode_seq("r", list(range(65)), first=3))


def test_abort_is_safe_in_every_decode_state() -> None:
    s = _scheduler()
    steps = ["reserve", "receiving", "verified", "running"]
    for depth, name in enumerate(steps):
        assert s.reserve(_decode_seq(name, list(range(5)), first=1)) is not None
        if depth >= 1:
            s.mark_receiving(name)
        if depth >= 2:
            s.mark_verified(name)
        if depth >= 3:
            s.activate(name)
        assert s.abort(name) and not s.abort(name)
        assert not s.mark_receiving(name)
        assert s.stats().num_used_blocks == 0, name
    s.check_invariants()


def test_imported_full_blocks_join_the_prefix_cache() -> None:
    s = _scheduler()
    prompt = list(range(10))
    s.reserve(_decode_seq("r", prompt, first=1))
    s.mark_receiving("r")
    s.mark_verified("r")
    s.activate("r")
    assert s.stats().num_cached_blocks == 2
    s.add(Sequence("local", prompt + [77], Params(2)))
    out = s.schedule()
    local = next(i for i in out.scheduled if i.request_id == "local")
    assert local.num_computed_tokens == 8


def test_disaggregated_outputs_equal_colocated_outputs() -> None:
    """Prefill on one scheduler, move the fake KV, decode on another: same tokens."""
    prompts = [[(7 * i + j) % 50 for j in range(n)] for i, n in enumerate([3, 9, 16, 21])]
    max_tokens = 7
    prefill = _scheduler(budget=8)
    decode = _scheduler(num_blocks=20)
    prefill_kv = FakePagedKV(16, BLOCK_SIZE)
    decode_kv = FakePagedKV(20, BLOCK_SIZE)
    for index, prompt in enumerate(prompts):
        prefill.add(Sequence(f"r{index}", prompt, Params(max_tokens), prefill_only=True))
    drive(prefill, prefill_kv)
    decoded: list[Sequence] = []
    for index, prompt in enumerate(prompts):
        rid = f"r{index}"
        held = prefill.held_blocks(rid)
        seq = Sequence(rid, prompt, Params(max_tokens), output_token_ids=[held.first_token_id])
        dst = decode.reserve(seq)
        assert dst is not None and len(dst) == len(held.block_ids)
        decode.mark_receiving(rid)
        for src_block, dst_block in zip(held.block_ids, dst, strict=True):
            decode_kv.slots[dst_block] = list(prefill_kv.slots[src_block])
        decode.mark_verified(rid)
        assert prefill.release(rid)
        decode.activate(rid)
        decoded.append(seq)
    drive(decode, decode_kv)
    assert prefill.stats().num_used_blocks == 0 and decode.stats().num_used_blocks == 0
    for seq in decoded:
        assert seq.status is SequenceStatus.FINISHED_LENGTH
        assert seq.output_token_ids == reference_output(seq.prompt_token_ids, max_tokens)


def test_next_lease_deadline_tells_an_idle_loop_when_to_expire() -> None:
    s = _scheduler()
    assert s.next_lease_deadline_s() is None
    _prefill_to_held(s, "a", list(range(6)), now_s=3.0)
    _prefill_to_held(s, "b", list(range(10, 16)), now_s=1.0)
    assert s.next_lease_deadline_s() == 1.0 + LEASE_S
    assert s.expire(s.next_lease_deadline_s() or 0.0) == ["b"]
    assert s.next_lease_deadline_s() == 3.0 + LEASE_S
