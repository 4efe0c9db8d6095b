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


def _xfer(input_len: int, transfer_s: float, handoff_s: float,
          num_bytes: float | None = None) -> dict[str, object]:
    tl = {"prefill.engine_first_token_s": 3.0, "decode.kv_transfer_end_s": 3.0 + handoff_s,
          "decode.kv_transfer_start_s": 3.0 + handoff_s - transfer_s}
    if num_bytes is not None:
        tl["decode.kv_transfer_bytes"] = num_bytes
    return {"success": True, "input_len": input_len, "timeline": tl}


def test_transfers_price_the_bytes_without_the_router_hops() -> None:
    # transfers at 5 ms + bytes / 600 MB/s; the handoffs around them hold router hops of
    # 60-240 ms that grow as prompts get *shorter* (a loaded phase of short prompts): the
    # handoffs' own slope comes out negative, the transfers' is the link
    rng = np.random.default_rng(0)
    lone = [_xfer(n, 0.005 + n * KV / 600e6, 0.010 + 0.005 + n * KV / 600e6)
            for n in (200, 400, 800, 1600, 3200)]
    busy = []
    for n in rng.integers(200, 2000, size=40):
        transfer = (0.005 + n * KV / 600e6) * rng.uniform(0.95, 1.05)
        busy.append(_xfer(int(n), transfer, transfer + 0.260 - n * 1e-4))
    busy[3] = _xfer(100, 0.25, 0.3)  # one that stalled: the median slope ignores it
    phases = [{"phase": "lone", "records": lone}, {"phase": "poisson5", "records": busy}]
    fit = link_fit.fit_link_transfers(phases, KV, DEFAULT)
    assert fit["num_requests"] == 45
    assert fit["link"]["bytes_s"] == pytest.approx(600e6, rel=0.1)
    # latency: the lone handoffs' median beyond their bytes (10 ms hop + 5 ms transfer)
    assert fit["link"]["latency_s"] == pytest.approx(0.015, rel=0.15)
    assert link_fit.fit_link_timelines(phases, KV, DEFAULT)["link"]["bytes_s"] != pytest.approx(
        600e6, rel=0.5)


def test_transfers_use_the_bytes_the_worker_moved() -> None:
    # the timeline's byte count wins over input_len x bytes per token (a prefix-cached
    # prompt moves fewer blocks than its length says)
    recs = [_xfer(1000, 0.002 + b / 1e9, 0.01 + b / 1e9, num_bytes=b)
            for b in np.linspace(1e5, 2e6, 12)]
    fit = link_fit.fit_link_transfers([{"phase": "lone", "records": recs}], KV, DEFAULT)
    assert fit["link"]["bytes_s"] == pytest.approx(1e9, rel=0.01)


def test_the_transfer_guard_keeps_the_default_link() -> None:
    few = [{"phase": "lone", "records": [_xfer(n, 0.001 * n, 0.01 + 0.001 * n)
                                         for n in (100, 200, 300)]}]
    fit = link_fit.fit_link_transfers(few, KV, DEFAULT)
    assert fit["link"] == {"bytes_s": DEFAULT.bytes_s, "latency_s": DEFAULT.latency_s}
    assert "fallback" in fit
    # every transfer the same size: no pair to take a slope from
    same = [{"phase": "lone", "records": [_xfer(500, 0.003, 0.01)] * 20}]
    assert "fallback" in link_fit.fit_link_transfers(same, KV, DEFAULT)
    # records without the decode worker's stamps (colocated, failed) are not transfers
    assert link_fit.transfers([_rec(100, 0.1), _rec(100, None)], KV) == []
