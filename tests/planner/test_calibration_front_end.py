"""The front end's CPU per output token on the probe (benchmarks/calibration/front_end.py)."""

from __future__ import annotations

from typing import Any

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
