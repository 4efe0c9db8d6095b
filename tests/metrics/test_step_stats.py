"""Step statistics: kinds, histogram buckets and sums, validation, snapshot isolation."""

from __future__ import annotations

import math
import threading

import pytest

from splitserve.metrics.phase import PhaseCounters
from splitserve.metrics.step_stats import (
    DECODE_BATCH_BUCKETS,
    PREFILL_TOKENS_BUCKETS,
    STEP_SECONDS_BUCKETS,
    Histogram,
    StepStats,
    step_kind,
)


def test_step_kind_by_what_the_step_computes() -> None:
    assert step_kind(128, 0) == "prefill"
    assert step_kind(0, 7) == "decode"
    assert step_kind(3, 1) == "mixed"
    with pytest.raises(ValueError, match="at least one token"):
        step_kind(0, 0)
    with pytest.raises(ValueError, match=">= 0"):
        step_kind(-1, 2)


def test_histogram_buckets_follow_prometheus_le() -> None:
    h = Histogram((1.0, 2.0, 4.0))
    for v in (0.0, 1.0, 1.5, 2.0, 3.9, 4.0, 4.5, 100.0):
        h.observe(v)
    # a value equal to an edge counts in that edge's bucket
    assert h.bucket_counts == [2, 2, 2, 2]
    assert h.cumulative() == [(1.0, 2), (2.0, 4), (4.0, 6), (math.inf, 8)]
    assert h.count == 8
    assert h.sum_value == pytest.approx(116.9)
    assert h.mean == pytest.approx(116.9 / 8)
    assert Histogram((1.0,)).mean is None


@pytest.mark.parametrize("edges", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)])
def test_histogram_rejects_bad_edges(edges: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="edges"):
        Histogram(edges)


def test_histogram_rejects_negative_and_nan() -> None:
    h = Histogram((1.0,))
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match=">= 0"):
            h.observe(bad)
    assert h.count == 0


def test_bucket_edges_span_cpu_and_gpu_steps() -> None:
    assert STEP_SECONDS_BUCKETS[0] <= 0.001 and STEP_SECONDS_BUCKETS[-1] >= 5.0
    assert DECODE_BATCH_BUCKETS[0] == 1 and DECODE_BATCH_BUCKETS[-1] >= 256
    # every batch up to 32 apart: a step's cost can jump from one size to the next
    assert DECODE_BATCH_BUCKETS[:32] == tuple(range(1, 33))
    assert PREFILL_TOKENS_BUCKETS[-1] >= 8192


def test_stats_count_steps_seconds_and_sizes_by_kind() -> None:
    stats = StepStats()
    steps = [(0.2, 512, 0), (0.03, 0, 4), (0.04, 0, 5), (0.25, 100, 3), (0.01, 0, 1)]
    for step_s, num_prefill, num_decode in steps:
        stats.record(step_s, num_prefill, num_decode)
    snap = stats.snapshot()
    assert {k: snap.num_steps(k) for k in ("prefill", "decode", "mixed")} == {
        "prefill": 1, "decode": 3, "mixed": 1}
    assert snap.step_seconds_total("decode") == pytest.approx(0.08)
    assert snap.step_seconds_total("mixed") == pytest.approx(0.25)
    # decode batch: every step with decodes (decode-only and mixed)
    assert snap.decode_batch.count == 4
    assert snap.decode_batch.sum_value == 13
    assert snap.decode_batch.mean == pytest.approx(13 / 4)
    # prompt tokens: every step with prompt tokens
    assert snap.prefill_tokens.count == 2
    assert snap.prefill_tokens.sum_value == 612
    le_512 = dict(snap.prefill_tokens.cumulative())[512]
    assert le_512 == 2  # 512 is an edge: counted in le="512"
    assert dict(snap.prefill_tokens.cumulative())[64] == 0


def test_bad_step_is_refused_before_anything_is_recorded() -> None:
    counters = PhaseCounters()
    with pytest.raises(ValueError, match="at least one token"):
        counters.record_step(0.1, (0, 0.0, 0.0), (0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        counters.steps.record(math.inf, 1, 0)
    assert counters.tokens == {"prefill": 0, "decode": 0}
    assert all(counters.steps.snapshot().num_steps(k) == 0 for k in ("prefill", "decode"))


def test_record_step_feeds_both_phase_counters_and_step_stats() -> None:
    counters = PhaseCounters()
    counters.record_step(0.5, (256, 1e9, 1e6), (0, 0.0, 0.0))
    counters.record_step(0.05, (0, 0.0, 0.0), (8, 1e6, 2e6))
    counters.record_step(0.3, (64, 3e8, 1e6), (8, 1e6, 2e6))
    snap = counters.steps.snapshot()
    assert [snap.num_steps(k) for k in ("prefill", "decode", "mixed")] == [1, 1, 1]
    assert snap.decode_batch.sum_value == counters.tokens["decode"] == 16
    assert snap.prefill_tokens.sum_value == counters.tokens["prefill"] == 320
    total_s = sum(snap.step_seconds_total(k) for k in ("prefill", "decode", "mixed"))
    assert total_s == pytest.approx(sum(counters.busy_s.values()))


def test_snapshot_is_a_copy_and_consistent_under_concurrent_steps() -> None:
    stats = StepStats()
    stats.record(0.01, 0, 2)
    snap = stats.snapshot()
    stats.record(0.01, 0, 2)
    assert snap.num_steps("decode") == 1  # later steps do not leak into an old snapshot

    stop = threading.Event()

    def writer() -> None:
        for _ in range(20000):
            stats.record(0.002, 16, 3)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not stop.is_set():
        s = stats.snapshot()
        # each mixed step adds one observation to all three histograms
        assert s.num_steps("mixed") == s.prefill_tokens.count == s.decode_batch.count - 2
        assert s.decode_batch.sum_value == 3 * s.num_steps("mixed") + 4
    thread.join()
    assert stats.snapshot().num_steps("mixed") == 20000
