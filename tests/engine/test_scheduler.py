"""Scheduling rules with tiny configs and fabricated model outputs (no torch)."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.sched_output import SchedulerOutput
from splitserve.engine.scheduler import Scheduler
from splitserve.engine.sequence import FinishReason, Sequence, SequenceStatus
from tests.engine.test_scheduler_paged_model import Params


def _scheduler(
    budget: int = 64,
    max_num_seqs: int = 8,
    max_model_len: int = 128,
    num_blocks: int = 32,
    block_size: int = 4,
    chunked: bool = True,
    caching: bool = True,
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(
            max_num_batched_tokens=budget,
            max_num_seqs=min(max_num_seqs, budget),
            max_model_len=max_model_len,
            enable_chunked_prefill=chunked,
        ),
        CacheConfig(num_blocks=num_blocks, block_size=block_size, enable_prefix_caching=caching),
    )


def _seq(
    rid: str, num_prompt_tokens: int, max_tokens: int | None = None, base: int = 0
) -> Sequence:
    prompt = [(base + i) % 997 for i in range(num_prompt_tokens)]
    return Sequence(rid, prompt, Params(max_tokens))


def _step(s: Scheduler, token: int = 7) -> SchedulerOutput:
    """schedule + update, sampling `token` for every sequence that samples."""
    out = s.schedule()
    if not out.is_empty:
        s.update(out, {i.request_id: token for i in out.scheduled if i.sample}, now_s=0.0)
    s.check_invariants()
    return out


def _work(out: SchedulerOutput) -> list[tuple[str, int, int, bool]]:
    return [
        (i.request_id, i.num_computed_tokens, i.num_new_tokens, i.sample) for i in out.scheduled
    ]


def test_token_budget_splits_a_long_prompt_into_chunks() -> None:
    s = _scheduler(budget=8)
    s.add(_seq("a", 20))
    outs = [_step(s) for _ in range(4)]
    assert [_work(o) for o in outs[:3]] == [
        [("a", 0, 8, False)],
        [("a", 8, 8, False)],
        [("a", 16, 4, True)],
    ]
    first = outs[0].scheduled[0]
    assert first.token_ids == tuple(range(8))
    assert outs[1].scheduled[0].token_ids == tuple(range(8, 16))
    # Prompt done, one token sampled: now a one-token decode at position 20.
    assert _work(outs[3]) == [("a", 20, 1, True)]
    assert outs[3].scheduled[0].token_ids == (7,)
    seq = s.get("a")
    assert seq is not None and seq.output_token_ids == [7, 7]


def test_a_prefill_chunk_shares_the_step_with_decodes_which_go_first() -> None:
    s = _scheduler(budget=6)
    s.add(_seq("d1", 3))
    s.add(_seq("d2", 3))
    assert _work(_step(s)) == [("d1", 0, 3, True), ("d2", 0, 3, True)]
    s.add(_seq("p", 10))
    out = _step(s)
    assert _work(out) == [("d1", 3, 1, True), ("d2", 3, 1, True), ("p", 0, 4, False)]
    assert out.num_batched_tokens == 6
    out = _step(s)
    # The chunked prompt keeps yielding the first slots of every step to the decodes.
    assert _work(out) == [("d1", 4, 1, True), ("d2", 4, 1, True), ("p", 4, 4, False)]


def test_decodes_are_served_before_waiting_prompts_when_budget_is_tight() -> None:
    s = _scheduler(budget=2)
    s.add(_seq("a", 1))
    s.add(_seq("b", 1))
    _step(s)
    s.add(_seq("c", 1))
    assert _work(_step(s)) == [("a", 1, 1, True), ("b", 1, 1, True)]
    assert s.stats().num_waiting == 1


def test_max_num_seqs_bounds_the_running_batch() -> None:
    s = _scheduler(max_num_seqs=2)
    for rid in "abc":
        s.add(_seq(rid, 2))
    assert [i.request_id for i in _step(s).scheduled] == ["a", "b"]
    assert s.stats().num_running == 2 and s.stats().num_waiting == 1
    assert s.finish("a", FinishReason.STOPPED)
    assert [i.request_id for i in _step(s).scheduled] == ["b", "c"]


def test_admission_is_bounded_by_free_blocks_and_strictly_fcfs() -> None:
    s = _scheduler(num_blocks=6, block_size=4)
    s.add(_seq("a", 16))  # 4 blocks
    s.add(_seq("big", 12, base=100))  # 3 blocks: does not fit the 2 left
    s.add(_seq("small", 2, base=200))  # would fit, but may not overtake "big"
    assert [i.request_id for i in _step(s).scheduled] == ["a"]
    assert s.stats().num_waiting == 2
    assert s.finish("a", FinishReason.STOPPED)
    assert [i.request_id for i in _step(s).scheduled] == ["big", "small"]


def test_admission_allocates_the_whole_prompt_so_chunks_never_stall() -> None:
    s = _scheduler(budget=4, num_blocks=8, block_size=4)
    s.add(_seq("a", 20))
    _step(s)
    seq = s.get("a")
    assert seq is not None and len(seq.block_ids) == 5
    assert s.stats().num_used_blocks == 5


def test_preemption_takes_the_latest_arrival_and_recomputes_it_first() -> None:
    # 3 blocks of 2 tokens; three 2-token prompts fill the pool, decode needs more.
    s = _scheduler(num_blocks=3, block_size=2, caching=False)
    for rid in "abc":
        s.add(_seq(rid, 2, base=ord(rid) * 10))
    _step(s, token=1)
    s.add(_seq("late", 1, base=900))
    out = _step(s, token=2)
    # a needs a 2nd block: c (latest running) is preempted; then b needs one: b goes too.
    assert out.preempted_ids == ("c", "b")
    assert _work(out) == [("a", 2, 1, True)]
    c = s.get("c")
    assert c is not None
    assert c.status is SequenceStatus.PREEMPTED and c.block_ids == []
    assert c.num_computed_tokens == 0 and c.num_preemptions == 1
    assert c.output_token_ids == [1]  # kept: recomputed, not resampled
    assert [q.request_id for q in s._waiting] == ["b", "c", "late"]
    assert s.finish("a", FinishReason.STOPPED)
    out = _step(s, token=3)
    # b recomputes prompt + its sampled token (3 tokens: 2 blocks), then c waits.
    assert _work(out) == [("b", 0, 3, True)]
    assert out.scheduled[0].token_ids == (ord("b") * 10, ord("b") * 10 + 1, 1)
    b = s.get("b")
    assert b is not None and b.output_token_ids == [1, 3]


def test_a_sequence_preempts_itself_when_it_is_the_latest() -> None:
    s = _scheduler(num_blocks=2, block_size=2, caching=False)
    s.add(_seq("a", 2))
    s.add(_seq("b", 2, base=50))
    _step(s)
    out = _step(s)
    assert out.preempted_ids == ("b",)
    assert _work(out) == [("a", 2, 1, True)]
    b = s.get("b")
    assert b is not None and b.status is SequenceStatus.PREEMPTED


def test_no_admission_in_a_step_that_preempted() -> None:
    s = _scheduler(num_blocks=3, block_size=2, caching=False)
    s.add(_seq("a", 2))
    s.add(_seq("b", 2, base=20))
    _step(s)
    s.add(_seq("c", 1, base=40))  # would fit the last free block after preempting b
    out = _step(s)
    assert out.preempted_ids == ("b",)
    assert [i.request_id for i in out.scheduled] == ["a"]


def test_prefix_cache_hit_skips_cached_tokens() -> None:
    s = _scheduler(block_size=4)
    s.add(_seq("a", 10))
    _step(s)
    s.add(_seq("b", 13))  # same first 10 tokens; blocks [0..4) and [4..8) are cached
    out = _step(s)
    assert ("b", 8, 5, True) in _work(out)
    assert s.stats().num_prefix_hit_tokens == 8


def test_without_chunking_a_prompt_waits_for_a_step_with_room() -> None:
    s = _scheduler(budget=12, max_model_len=12, chunked=False)
    s.add(_seq("a", 8))
    s.add(_seq("b", 8, base=100))
    assert _work(_step(s)) == [("a", 0, 8, True)]
    assert _work(_step(s)) == [("a", 8, 1, True), ("b", 0, 8, True)]


def test_max_tokens_and_max_model_len_finish_with_length() -> None:
    s = _scheduler(max_model_len=6)
    s.add(_seq("a", 2, max_tokens=2))
    s.add(_seq("b", 3))
    out = _step(s)
    assert out.is_empty is False
    out = s.schedule()
    result = s.update(out, {i.request_id: 5 for i in out.scheduled}, now_s=0.0)
    assert set(result.finished_length_ids) == {"a"}
    out = s.schedule()
    result = s.update(out, {"b": 5}, now_s=0.0)  # b reaches 6 tokens = max_model_len
    assert result.finished_length_ids == ("b",)
    assert s.get("a") is None and s.get("b") is None
    assert s.stats().num_used_blocks == 0
    assert not s.has_unfinished()


def test_prompt_of_exactly_max_model_len_gets_one_token() -> None:
    s = _scheduler(max_model_len=8)
    seq = _seq("a", 8)
    s.add(seq)
    _step(s)
    assert seq.status is SequenceStatus.FINISHED_LENGTH
    assert seq.output_token_ids == [7]


def test_finish_and_abort_free_blocks_and_are_idempotent() -> None:
    s = _scheduler()
    s.add(_seq("run", 9))
    s.add(_seq("wait", 3, base=40))
    _step(s)
    s.add(_seq("queued", 3, base=80))
    assert s.stats().num_used_blocks > 0
    assert s.finish("run", FinishReason.STOPPED)
    assert not s.finish("run", FinishReason.STOPPED)
    assert s.abort("wait") and not s.abort("wait")
    assert s.abort("queued") and not s.abort("queued")
    assert not s.abort("never-seen")
    stats = s.stats()
    assert (stats.num_used_blocks, stats.num_running, stats.num_waiting) == (0, 0, 0)
    assert stats.num_free_blocks == stats.num_total_blocks


def test_abort_between_schedule_and_update_is_safe() -> None:
    s = _scheduler()
    s.add(_seq("a", 4))
    s.add(_seq("b", 4, base=10))
    out = s.schedule()
    assert s.abort("a")
    result = s.update(out, {"a": 1, "b": 2}, now_s=0.0)
    assert result.finished_length_ids == ()
    b = s.get("b")
    assert b is not None and b.output_token_ids == [2]
    s.check_invariants()


def test_update_rejects_missing_or_unexpected_tokens_and_wrong_order() -> None:
    s = _scheduler(budget=4)
    s.add(_seq("a", 6))
    out = s.schedule()
    with pytest.raises(RuntimeError, match="before update"):
        s.schedule()
    with pytest.raises(ValueError, match="partial chunk"):
        s.update(out, {"a": 3}, now_s=0.0)
    s.update(out, {}, now_s=0.0)
    out = s.schedule()
    with pytest.raises(ValueError, match="no sampled token"):
        s.update(out, {}, now_s=0.0)
    with pytest.raises(RuntimeError, match="latest"):
        s.update(SchedulerOutput(step_index=0, scheduled=(), preempted_ids=()), {}, now_s=0.0)


def test_add_rejects_requests_that_can_never_run() -> None:
    s = _scheduler(max_model_len=40, num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="max_model_len"):
        s.add(_seq("long", 41))
    with pytest.raises(ValueError, match="KV blocks"):
        s.add(_seq("big", 17))
    s.add(_seq("ok", 3))
    with pytest.raises(ValueError, match="already in use"):
        s.add(_seq("ok", 3))
    with pytest.raises(ValueError, match="empty"):
        Sequence("e", [])
    with pytest.raises(ValueError, match="max_tokens"):
        Sequence("m", [1], Params(0))
    with pytest.raises(ValueError, match="token ids"):
        Sequence("n", [1, -2])
    assert s.stats().num_waiting == 1


def test_pool_smaller_than_max_model_len_finishes_at_capacity() -> None:
    s = _scheduler(max_model_len=100, num_blocks=2, block_size=4)
    seq = _seq("a", 5)
    s.add(seq)
    for _ in range(10):
        _step(s)
    assert seq.status is SequenceStatus.FINISHED_LENGTH
    assert seq.num_tokens == 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens"),
        ({"max_num_seqs": -1}, "max_num_seqs"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"handoff_lease_s": 0.0}, "handoff_lease_s"),
        ({"handoff_lease_s": float("nan")}, "handoff_lease_s"),
        ({"handoff_lease_s": float("inf")}, "handoff_lease_s"),
        ({"enable_chunked_prefill": 1}, "enable_chunked_prefill"),
        ({"max_num_batched_tokens": 3}, "max_num_seqs"),
        ({"enable_chunked_prefill": False, "max_num_batched_tokens": 8}, "max_num_batched_tokens"),
    ],
)
def test_scheduler_config_rejects_bad_values(kwargs: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "max_num_batched_tokens": 64,
        "max_num_seqs": 4,
        "max_model_len": 32,
    }
    values.update(kwargs)
    with pytest.raises(ValueError, match=field):
        SchedulerConfig(**values)  # type: ignore[arg-type]


def test_update_accepts_integer_scalars_and_rejects_non_ids() -> None:
    s = _scheduler()
    s.add(_seq("a", 3))
    out = s.schedule()
    for bad in (-1, 2.0, "5", True):
        with pytest.raises(ValueError, match="token ids must be integers"):
            s.update(out, {"a": bad}, now_s=0.0)  # type: ignore[dict-item]
    s.update(out, {"a": np.int64(11)}, now_s=0.0)  # type: ignore[dict-item]
    seq = s.get("a")
    assert seq is not None and seq.output_token_ids == [11]
    assert type(seq.output_token_ids[0]) is int


def test_scheduled_item_gives_positions_and_cache_slots() -> None:
    s = _scheduler(budget=8, block_size=4)
    s.add(_seq("a", 6))
    _step(s)
    (item,) = s.schedule().scheduled
    assert list(item.positions) == [6] and item.context_len == 7
    assert item.slot_ids(4) == [item.block_ids[1] * 4 + 2]
    s2 = _scheduler(budget=5, block_size=2)
    s2.add(_seq("b", 7))
    _step(s2)
    (chunk,) = s2.schedule().scheduled
    b0, b1, b2, b3 = chunk.block_ids
    assert list(chunk.positions) == [5, 6]
    assert chunk.slot_ids(2) == [b2 * 2 + 1, b3 * 2]


def test_update_reports_which_sequences_got_a_token() -> None:
    s = _scheduler(budget=6)
    s.add(_seq("long", 10))
    s.add(_seq("short", 2, max_tokens=1, base=50))
    out = s.schedule()
    assert _work(out) == [("long", 0, 6, False)]
    assert s.update(out, {}, now_s=0.0).appended_ids == ()
    out = s.schedule()
    result = s.update(out, {"long": 1, "short": 2}, now_s=0.0)
    assert result.appended_ids == ("long", "short")
    assert result.finished_length_ids == ("short",)
    idle = _scheduler()
    empty = idle.schedule()
    assert empty.is_empty
    assert idle.update(empty, {}, now_s=0.0).appended_ids == ()  # harmless on an idle step


def test_scheduling_modules_import_only_stdlib_and_each_other() -> None:
    """The scheduler stays pure: no torch, numpy or sockets, even indirectly."""
    import ast
    import pathlib
    import sys

    engine_dir = pathlib.Path(__file__).resolve().parents[2] / "splitserve" / "engine"
    pure = ["config", "sequence", "block_manager", "handoff", "scheduler"]
    pure += [p.stem for p in engine_dir.glob("sched_*.py")]
    for name in pure:
        tree = ast.parse((engine_dir / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if module.startswith("splitserve."):
                    assert module.removeprefix("splitserve.engine.") in pure, (name, module)
                else:
                    assert top in sys.stdlib_module_names and top != "socket", (name, module)
