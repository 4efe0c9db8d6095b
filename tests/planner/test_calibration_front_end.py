"""The front end's CPU per output token on the probe (benchmarks/calibration/front_end.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.calibration import front_end


def _phase(duration_s: float, tokens: int, router_s: float, client_s: float,
           foreign_cpu_s: float = 0.0) -> dict[str, Any]:
    records = [{"success": True, "output_len": tokens // 2},
               {"success": True, "output_len": tokens - tokens // 2},
               {"success": False, "output_len": None}]
    return {"duration_s": duration_s, "records": records, "foreign_cpu_s": foreign_cpu_s,
            "process_cpu_s": {"router": router_s, "bench client": client_s,
                              "decode-1": 30.0}}


def test_per_token_cpu_is_told_apart_from_the_fixed_share() -> None:
    # 0.05 of a core always, plus 0.4 ms per token, split between router and client
    def cpu(d: float, t: int) -> float:
        return 0.05 * d + 0.0004 * t

    probe = [_phase(d, t, 0.6 * cpu(d, t), 0.4 * cpu(d, t))
             for d, t in ((10.0, 500), (20.0, 4000), (20.0, 8000), (5.0, 100))]
    got = front_end.cpu_per_token(probe)
    assert got["cpu_per_token_s"] == pytest.approx(0.0004)
    assert got["idle_cores"] == pytest.approx(0.05)
    assert got["num_phases"] == 4


def test_contaminated_or_unrecorded_phases_are_left_out() -> None:
    clean = [_phase(10.0, 500, 0.5, 0.3), _phase(20.0, 4000, 2.0, 1.0)]
    # another process took 20% of a core meanwhile: not the front end's
    dirty = _phase(20.0, 100, 9.0, 9.0, foreign_cpu_s=4.0)
    unrecorded = {**_phase(20.0, 100, 9.0, 9.0), "process_cpu_s": {"decode-1": 30.0}}
    assert front_end.cpu_per_token(clean + [dirty, unrecorded]) == front_end.cpu_per_token(
        clean)
    assert front_end.cpu_per_token([dirty]) == {"cpu_per_token_s": 0.0, "idle_cores": 0.0,
                                                "num_phases": 0}


def _timed(ttft_s: float, received_s: float, first_s: float, role: str = "full",
           success: bool = True) -> dict[str, Any]:
    return {"success": success, "ttft_s": ttft_s if success else None,
            "timeline": {f"{role}.worker_received_s": received_s,
                         f"{role}.engine_first_token_s": first_s}}


def test_front_end_latency_is_the_ttft_outside_the_worker() -> None:
    records = [_timed(0.100, 0.004, 0.094),  # 90 ms in the worker: 10 ms outside
               _timed(0.250, 0.010, 0.230, role="prefill"),  # split fleet: 30 ms
               _timed(0.1, 0.0, 0.05, success=False),  # failed: no TTFT
               {"success": True, "ttft_s": 0.2, "timeline": {}}]  # no timeline
    assert front_end.latency_s(records) == pytest.approx([0.010, 0.030])


def test_gauge_excess_draws_its_latencies_beyond_the_lone_median() -> None:
    gauge = [_timed(0.1 + lat, 0.0, 0.1) for lat in (0.010, 0.020, 0.030, 0.040)] * 5
    draws = front_end.excess_latency_s(gauge, lone_median_s=0.010, num=4000, seed=1)
    assert draws is not None and len(draws) == 4000
    assert set(np.round(draws, 6)) == {0.0, 0.01, 0.02, 0.03}
    assert float(np.mean(draws)) == pytest.approx(0.015, abs=0.001)
    # a gauge too small to tell a distribution: no term
    assert front_end.excess_latency_s(gauge[:front_end.MIN_GAUGE - 1], 0.010, 10) is None
