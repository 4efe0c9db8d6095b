"""Statistics on constructed data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitserve.bench.records import RequestRecord
from splitserve.bench.stats import SLO, attainment, goodput_search, percentile, summarize


def rec(index: int, ttft: float | None = 0.1, e2e: float | None = 1.0, out: int = 10,
        itl: list[float] | None = None, error: str | None = None) -> RequestRecord:
    return RequestRecord(index=index, scheduled_s=0.0, input_len=100, requested_output_len=out,
                         send_s=0.0, ttft_s=ttft, e2e_s=e2e, output_len=out,
                         itl_s=itl if itl is not None else [], error=error)


def test_percentiles_known_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, 101)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0, 100))
@settings(max_examples=100, deadline=None)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-9, abs=1e-6)


def test_tpot_is_decode_time_per_token_after_the_first() -> None:
    assert rec(0, ttft=0.1, e2e=1.0, out=10).tpot_s == pytest.approx(0.1)
    assert rec(0, out=1).tpot_s is None  # one token: no decode phase
    assert rec(0, error="boom").tpot_s is None


def test_attainment_needs_both_slos_and_counts_failures_as_misses() -> None:
    records = [
        rec(0, ttft=0.1, e2e=1.0, out=10),    # tpot 0.1: meets both
        rec(1, ttft=0.6, e2e=1.5, out=10),    # ttft miss
        rec(2, ttft=0.1, e2e=3.0, out=10),    # tpot 0.322: miss
        rec(3, ttft=None, e2e=None, error="HTTP 500"),
        rec(4, ttft=0.2, e2e=0.2, out=1),     # one token: judged on TTFT only
    ]
    slo = SLO(ttft_s=0.5, tpot_s=0.2)
    assert attainment(records, slo) == pytest.approx(2 / 5)
    assert attainment(records, SLO(ttft_s=0.5)) == pytest.approx(3 / 5)
    assert attainment(records, SLO(tpot_s=0.2)) == pytest.approx(3 / 5)
    assert attainment([], slo) is None
    with pytest.raises(ValueError, match="ttft_s"):
        SLO(ttft_s=0)


def test_summary_counts_throughput_and_pooled_itl() -> None:
    records = [
        rec(0, ttft=0.1, e2e=1.0, out=4, itl=[0.3, 0.3, 0.3]),
        rec(1, ttft=0.3, e2e=2.0, out=2, itl=[1.7]),
        rec(2, ttft=None, e2e=None, error="timeout after 1 s"),
        RequestRecord(3, 9.0, 10, 5),  # never sent (duration bound)
    ]
    s = summarize(records, duration_s=4.0, slo=SLO(ttft_s=0.2))
    assert (s["sent"], s["completed"], s["failed"]) == (3, 2, 1)
    assert s["sent"] == s["completed"] + s["failed"]
    assert s["request_throughput_rps"] == pytest.approx(0.5)
    assert s["output_throughput_tps"] == pytest.approx(6 / 4)
    assert s["ttft_s"]["p50"] == pytest.approx(0.2)
    assert s["tpot_s"]["mean"] == pytest.approx((0.3 + 1.7) / 2)
    assert s["itl_s"]["p50"] == pytest.approx(0.3)
    assert s["itl_s"]["max"] == pytest.approx(1.7)
    assert s["e2e_s"]["p99"] == pytest.approx(1.0 + 0.99 * 1.0)
    assert s["slo_attainment"] == pytest.approx(1 / 3)
    assert s["errors"] == {"timeout after 1 s": 1}
    assert s["send_lag_s"]["max"] == 0.0


def test_table_shows_counts_attainment_and_warns_on_client_lag() -> None:
    from splitserve.bench.report import format_table

    late = rec(0)
    late.scheduled_s, late.send_s = 1.0, 1.2
    s = {**summarize([rec(1), late], duration_s=2.0, slo=SLO(ttft_s=1.0)), "rate_rps": 3.0}
    table = format_table([s])
    row = table.splitlines()[2]
    assert row.split()[:5] == ["3", "rps", "2", "2", "0"]
    assert row.endswith("100%")
    assert "p99 send lag 198 ms" in table


def curve(knee: float):
    """Attainment 1.0 up to `knee`, then falling linearly by 1 per req/s."""
    return lambda rate: 1.0 if rate <= knee else max(0.0, 1.0 - (rate - knee))


@pytest.mark.parametrize("start", [None, 0.5, 3.0, 30.0])
def test_goodput_search_finds_the_knee_on_a_monotone_curve(start: float | None) -> None:
    # passes (>= 0.9) exactly up to 3.8 req/s
    found = goodput_search(curve(3.7), min_rate=0.25, max_rate=64, target=0.9,
                           start_rate=start, max_runs=12, rel_tol=0.02)
    assert len(found.runs) <= 12
    assert found.goodput_rps <= 3.8 + 1e-9
    assert found.goodput_rps >= 3.8 * 0.98
    # the reported rate is one that was actually run and passed
    assert (found.goodput_rps, curve(3.7)(found.goodput_rps)) in found.runs


def test_goodput_search_bounds() -> None:
    always_fail = goodput_search(lambda r: 0.0, min_rate=1, max_rate=8, max_runs=5)
    assert always_fail.goodput_rps == 0.0
    assert [r for r, _ in always_fail.runs] == [1]
    always_pass = goodput_search(lambda r: 1.0, min_rate=1, max_rate=8, max_runs=10)
    assert always_pass.goodput_rps == 8
    assert [r for r, _ in always_pass.runs] == [1, 2, 4, 8]
    capped = goodput_search(curve(100), min_rate=1, max_rate=1000, max_runs=3)
    assert len(capped.runs) == 3 and capped.goodput_rps == 4
    with pytest.raises(ValueError, match="min_rate"):
        goodput_search(lambda r: 1.0, min_rate=0, max_rate=1)


@given(st.floats(0.3, 50), st.floats(0.25, 60))
@settings(max_examples=100, deadline=None)
def test_goodput_search_property(knee: float, start: float) -> None:
    found = goodput_search(curve(knee), min_rate=0.25, max_rate=64, start_rate=start,
                           max_runs=20, rel_tol=0.05)
    true_max = knee + 0.1
    assert found.goodput_rps <= true_max + 1e-9
    assert found.goodput_rps >= true_max / 1.05 - 1e-9
