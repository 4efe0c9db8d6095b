"""A fake paged "model" that checks the scheduler's block tables end to end.

The fake KV cache stores token ids in slots (block, offset) exactly where a real model
writes K/V; the fake next token is a function of the context it READS BACK through the
block table. So a wrong block table, a cached block overwritten while shared, a stale
block reused without recompute, or a wrong start position changes the output. The
reference is the same function applied to the true token sequence.
"""

from __future__ import annotations

import random

from splitserve.engine.config import CacheConfig, SchedulerConfig
from splitserve.engine.sched_output import SchedulerOutput
from splitserve.engine.scheduler import Scheduler
from splitserve.engine.sequence import Sequence, SequenceStatus

VOCAB = 50


class Params:
    def __init__(self, max_tokens: int | None) -> None:
        self._max_tokens = max_tokens

    @property
    def max_tokens(self) -> int | None:
        return self._max_tokens


def next_token(context: list[int]) -> int:
    acc = 17
    for token in context:
        acc = (acc * 31 + token + 1) % 1_000_003
    return acc % VOCAB


def reference_output(prompt: list[int], num_tokens: int) -> list[int]:
    tokens = list(prompt)
    for _ in range(num_tokens):
        tokens.append(next_token(tokens))
    return tokens[len(prompt) :]


class FakePagedKV:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        self.slots: list[list[int | None]] = [[None] * block_size for _ in range(num_blocks)]

    def write(self, block_ids: tuple[int, ...] | list[int], start: int, tokens: list[int]) -> None:
        for offset, token in enumerate(tokens):
            pos = start + offset
            self.slots[block_ids[pos // self.block_size]][pos % self.block_size] = token

    def read(self, block_ids: tuple[int, ...] | list[int], num_tokens: int) -> list[int | None]:
        size = self.block_size
        return [self.slots[block_ids[p // size]][p % size] for p in range(num_tokens)]

    def run(self, out: SchedulerOutput, scheduler: Scheduler | None = None) -> dict[str, int]:
        """Compute one step; with `scheduler`, also assert each context is the true one."""
        sampled: dict[str, int] = {}
        for item in out.scheduled:
            # A real model needs at least one computed row to take logits from.
            assert item.num_new_tokens >= 1, item.request_id
            assert len(item.block_ids) * self.block_size >= item.context_len
            self.write(item.block_ids, item.num_computed_tokens, list(item.token_ids))
            context = self.read(item.block_ids, item.context_len)
            if scheduler is not None:
                seq = scheduler.get(item.request_id)
                assert seq is not None
                assert context == seq.all_token_ids[: item.context_len], item.request_id
            if item.sample:
                assert None not in context
                sampled[item.request_id] = next_token([t for t in context if t is not None])
        return sampled


def drive(scheduler: Scheduler, kv: FakePagedKV, max_steps: int = 2000) -> int:
    """Step until nothing is queued or running; returns the number of steps."""
    steps = 0
    while scheduler.has_work():
        out = scheduler.schedule()
        if not out.is_empty:
            scheduler.update(out, kv.run(out, scheduler), now_s=float(steps))
        scheduler.check_invariants()
        steps += 1
        assert steps < max_steps, "scheduler made no progress"
    return steps


def _run_workload(
    seed: int, num_blocks: int, budget: int, chunked: bool = True, caching: bool = True
) -> tuple[list[Sequence], Scheduler]:
    rng = random.Random(seed)
    block_size = 4
    scheduler = Scheduler(
        SchedulerConfig(
            max_num_batched_tokens=budget,
            max_num_seqs=6,
            max_model_len=64,
            enable_chunked_prefill=chunked,
        ),
        CacheConfig(num_blocks=num_blocks, block_size=block_size, enable_prefix_caching=caching),
    )
    kv = FakePagedKV(num_blocks, block_size)
    shared = [rng.randrange(VOCAB) for _ in range(12)]
    seqs = []
    for index in range(12):
        head = shared[: rng.choice([0, 4, 8, 12])]
        tail = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))]
        seq = Sequence(f"r{index}", head + tail, Params(rng.randint(1, 12)))
        seqs.append(seq)
        scheduler.add(seq)
        if index % 3 == 2:  # arrivals spread over time
            for _ in range(rng.randint(0, 4)):
                out = scheduler.schedule()
                if not out.is_empty:
                    scheduler.update(out, kv.run(out, scheduler), now_s=0.0)
    drive(scheduler, kv)
    return seqs, scheduler


def test_outputs_match_reference_with_chunking_preemption_and_prefix_hits() -> None:
    num_preempted = 0
    for seed in range(6):
        # 14 blocks of 4 tokens for up to 6 sequences of up to 44 tokens: preemption is forced
        seqs, scheduler = _run_workload(seed, num_blocks=14, budget=7)
        for seq in seqs:
            assert seq.status is SequenceStatus.FINISHED_LENGTH
            assert seq.output_token_ids == reference_output(
                seq.prompt_token_ids, len(seq.output_token_ids)
            )
            assert len(seq.output_token_ids) == seq.max_tokens
            num_preempted += seq.num_preemptions
        stats = scheduler.stats()
        assert stats.num_used_blocks == 0
        assert stats.num_free_blocks == stats.num_total_blocks
        assert stats.num_prefix_hit_tokens > 0
    assert num_preempted > 0


def test_outputs_match_reference_without_chunking_or_caching() -> None:
    for seed in range(3):
        seqs, scheduler = _run_workload(
            seed, num_blocks=16, budget=64, chunked=False, caching=False
        )
        for seq in seqs:
            assert seq.output_token_ids == reference_output(
                seq.prompt_token_ids, len(seq.output_token_ids)
            )
        assert scheduler.stats().num_cached_blocks == 0
