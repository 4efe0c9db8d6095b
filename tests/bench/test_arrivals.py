"""Arrival processes and replay of the real traces in ../shared/traces (small windows)."""

from __future__ import annotations

import json
import math
import os
import statistics
from datetime import datetime
from pathlib import Path

import pytest

from splitserve.bench.arrivals import TraceScaling, arrival_offsets, read_trace

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces"
if not TRACES.is_dir():
    TRACES = Path("/work/shared/traces")
AZURE_CODE = TRACES / "azure_llm_2023_code.csv"
AZURE_CONV = TRACES / "azure_llm_2023_conv.csv"
MOONCAKE = TRACES / "mooncake_fast25_conversation.jsonl"
needs_traces = pytest.mark.skipif(not AZURE_CODE.is_file(), reason="shared traces absent")


def test_poisson_rate_and_seed() -> None:
    offsets = arrival_offsets("poisson", 10.0, num_requests=5000, duration_s=None, seed=3)
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert offsets[0] == 0.0 and len(offsets) == 5000
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.05)
    # exponential gaps: std == mean
    assert statistics.stdev(gaps) == pytest.approx(0.1, rel=0.08)
    assert offsets == arrival_offsets("poisson", 10.0, num_requests=5000, duration_s=None, seed=3)


def test_constant_and_burst_keep_the_mean_rate() -> None:
    const = arrival_offsets("constant", 4.0, num_requests=9, duration_s=None)
    assert const == pytest.approx([i * 0.25 for i in range(9)])
    burst = arrival_offsets("burst", 4.0, num_requests=10, duration_s=None, burst_size=4)
    assert burst == pytest.approx([0.0] * 4 + [1.0] * 4 + [2.0] * 2)


def test_bounds_by_count_and_duration() -> None:
    by_time = arrival_offsets("constant", 10.0, num_requests=None, duration_s=1.0)
    assert len(by_time) == 10 and max(by_time) < 1.0
    both = arrival_offsets("poisson", 100.0, num_requests=7, duration_s=60.0)
    assert len(both) == 7
    with pytest.raises(ValueError, match="bound the run"):
        arrival_offsets("poisson", 1.0, num_requests=None, duration_s=None)
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets("poisson", 0.0, num_requests=1, duration_s=None)
    with pytest.raises(ValueError, match="arrival kind"):
        arrival_offsets("trace", 1.0, num_requests=1, duration_s=None)


def _azure_rows(path: Path) -> list[tuple[float, int, int]]:
    """Independent reading: fromisoformat on the stamp cut to microseconds."""
    rows = []
    with open(path) as f:
        next(f)
        for line in f:
            stamp, ctx, gen = line.strip().split(",")
            t = datetime.fromisoformat(stamp[:26]).timestamp()
            rows.append((t, int(ctx), int(gen)))
    return rows


@needs_traces
@pytest.mark.parametrize("path", [AZURE_CODE, AZURE_CONV])
def test_azure_window_scaled(path: Path) -> None:
    rows = _azure_rows(path)
    t0 = min(r[0] for r in rows)
    expected = sorted(r for r in rows if t0 + 30 <= r[0] < t0 + 90)
    trace = read_trace(TraceScaling(str(path), start_s=30, duration_s=60, length_scale=4))
    assert len(trace) == len(expected) > 10
    for got, (t, ctx, gen) in zip(trace, expected, strict=True):
        assert got.arrival_s == pytest.approx(t - t0 - 30, abs=1e-5)
        assert got.input_len == max(1, math.ceil(ctx / 4))
        assert got.output_len == max(1, math.ceil(gen / 4))
    fast = read_trace(TraceScaling(str(path), start_s=30, duration_s=60, length_scale=4, speed=2))
    assert [r.arrival_s * 2 for r in fast] == pytest.approx([r.arrival_s for r in trace])
    assert max(r.arrival_s for r in fast) < 30


@needs_traces
def test_mooncake_window_and_request_cap() -> None:
    with open(MOONCAKE) as f:
        objs = [json.loads(line) for line in f]
    expected = sorted((o for o in objs if o["timestamp"] < 20_000), key=lambda o: o["timestamp"])
    trace = read_trace(TraceScaling(str(MOONCAKE), duration_s=20, length_scale=16))
    assert len(trace) == len(expected) > 10
    assert [r.arrival_s for r in trace] == pytest.approx([o["timestamp"] / 1000 for o in expected])
    assert [r.input_len for r in trace] == [math.ceil(o["input_length"] / 16) for o in expected]
    assert len(read_trace(TraceScaling(str(MOONCAKE)), max_requests=5)) == 5


def test_scaling_is_described_and_validated(tmp_path: Path) -> None:
    s = TraceScaling("/x/azure_llm_2023_code.csv", start_s=60, duration_s=120, length_scale=8,
                     speed=0.5)
    assert s.describe() == ("trace azure_llm_2023_code.csv window [60s, 180s), lengths / 8, "
                            "speed x0.5")
    assert s.to_dict()["description"] == s.describe()
    with pytest.raises(ValueError, match="speed"):
        TraceScaling("x.csv", speed=0)
    with pytest.raises(ValueError, match="not found"):
        read_trace(TraceScaling(str(tmp_path / "missing.csv")))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_trace(TraceScaling(str(bad)))
    assert os.path.basename(str(AZURE_CODE)) == "azure_llm_2023_code.csv"
