"""The KV link fitted on the probe's timed handoffs (benchmarks/calibration/link_fit.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.calibration import fit_steps, link_fit
from benchmarks.calibration.replay import Link

DEFAULT = Link(bytes_s=0.18e9, latency_s=0.002)
KV = 1000  # bytes per token


def _rec(input_len: int, handoff_s: float | None, success: bool = True) -> dict[str, object]:
    tl = {} if handoff_s is None else {"prefill.engine_first_token_s": 3.0,
                                       "decode.kv_transfer_end_s": 3.0 + handoff_s}
    return {"success": success, "input_len": input_len, "timeline": tl}


def _phase(name: str, lens: list[int], latency_s: float, bytes_s: float) -> dict[str, object]:
    return {"phase": name, "records": [_rec(n, latency_s + n * KV / bytes_s) for n in lens]}


def test_a_phase_shift_does_not_bend_the_slope() -> None:
    # 400 MB/s everywhere; the loaded phase adds 30 ms to every handoff and has shorter
    # prompts: a least-squares line over both together would read a far slower link
    lone = _phase("lone", [100, 200, 400, 800, 1600], 0.008, 400e6)
    busy = _phase("poisson5", [60, 80, 100, 120, 140, 160], 0.038, 400e6)
    fit = link_fit.fit_link_timelines([lone, busy], KV, DEFAULT)
    assert fit["link"]["bytes_s"] == pytest.approx(400e6)
    assert fit["link"]["latency_s"] == pytest.approx(0.008)  # the lone requests'
    assert fit["num_requests"] == 11
    pooled = [(r["timeline"]["decode.kv_transfer_end_s"] - 3.0, r["input_len"] * KV)
              for p in (lone, busy) for r in p["records"]]
    s, b = np.array(pooled).T
    assert 1 / np.polyfit(b, s, 1)[0] < 200e6  # what the fixed effect protects against


def test_a_handoff_that_queued_does_not_move_the_median_slope() -> None:
    lens = [100, 150, 200, 250, 300, 350, 400, 450, 500, 550]
    phase = _phase("lone", lens, 0.01, 500e6)
    phase["records"][2] = _rec(200, 0.01 + 200 * KV / 500e6 + 0.2)  # waited 200 ms
    fit = link_fit.fit_link_timelines([phase], KV, DEFAULT)
    assert fit["link"]["bytes_s"] == pytest.approx(500e6, rel=0.05)


def test_the_guard_keeps_the_default_link() -> None:
    few = _phase("lone", [100, 200, 300], 0.01, 500e6)
    fit = link_fit.fit_link_timelines([few], KV, DEFAULT)
    assert fit["link"] == {"bytes_s": DEFAULT.bytes_s, "latency_s": DEFAULT.latency_s}
    assert "fallback" in fit
    # bigger prompts handed off faster: no positive slope, no link from it
    odd = {"phase": "lone", "records": [_rec(n, 0.1 - n * 1e-5) for n in range(100, 1200, 100)]}
    assert link_fit.fit_link_timelines([odd], KV, DEFAULT)["link"]["bytes_s"] == DEFAULT.bytes_s
    # colocated or failed requests carry no handoff
    none = {"phase": "lone", "records": [_rec(100, None)] * 20 + [_rec(100, 0.1, False)] * 20}
    assert link_fit.fit_link_timelines([none], KV, DEFAULT)["num_requests"] == 0


def test_fit_by_steps_rejects_an_unknown_link_source() -> None:
    with pytest.raises(ValueError, match="link_from"):
        fit_steps.fit_by_steps(None, "1P1D", [], {}, DEFAULT, link_from="guess")  # type: ignore[arg-type]
