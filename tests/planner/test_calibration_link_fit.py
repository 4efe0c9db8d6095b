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


def test_a_transfer_beside_another_prompt_counts_as_from_a_busy_source() -> None:
    def rec(send: float, scheduled: float, first: float, start: float, end: float) -> dict:
        return {"success": True, "input_len": 100, "send_s": send,
                "timeline": {"prefill.engine_first_scheduled_s": scheduled,
                             "prefill.engine_first_token_s": first,
                             "decode.kv_transfer_start_s": start,
                             "decode.kv_transfer_end_s": end}}
    # request A prefills 0-1 s and transfers 1.0-1.1 s while B (sent at 0.9 s) prefills
    # 1.0-2.0 s; B transfers 2.0-2.1 s with nothing else computing. Times are relative
    # to each request's send.
    a = rec(0.0, 0.0, 1.0, 1.0, 1.1)
    b = rec(0.9, 0.1, 1.1, 1.1, 1.2)
    assert link_fit.source_busy_shares([a, b]) == pytest.approx([1.0, 0.0])


def _pair_phase(name: str, lens: list[int], busy_bytes_s: float, idle_bytes_s: float,
                busy_latency_s: float, idle_latency_s: float) -> dict[str, object]:
    """Pairs of requests 10 s apart: A's KV goes out while B's prompt computes (a busy
    source), B's after it (idle). Each handoff: a 5-ms hop plus its transfer."""
    records = []
    for k, (n_a, n_b) in enumerate(zip(lens[::2], lens[1::2], strict=True)):
        t0 = 10.0 * k
        for n, send, scheduled, first, busy in ((n_a, t0, 0.0, 0.5, True),
                                                (n_b, t0 + 0.4, 0.1, 0.6, False)):
            transfer = (busy_latency_s + n * KV / busy_bytes_s if busy
                        else idle_latency_s + n * KV / idle_bytes_s)
            start = first + 0.005
            records.append({"success": True, "input_len": n, "send_s": send, "timeline": {
                "prefill.engine_first_scheduled_s": scheduled,
                "prefill.engine_first_token_s": first,
                "decode.kv_transfer_start_s": start,
                "decode.kv_transfer_end_s": start + transfer}})
    return {"phase": name, "records": records}


def test_a_busy_source_s_transfers_are_priced_apart() -> None:
    lens = [int(n) for n in np.linspace(200, 2000, 24)]
    phases = [_pair_phase(f"poisson{i}", lens, 300e6, 1e9, 0.010, 0.004) for i in (3, 5)]
    fit = link_fit.fit_link_transfers(phases, KV, DEFAULT, split_busy=True)
    link = fit["link"]
    assert link["bytes_s"] == pytest.approx(1e9, rel=0.01)
    assert link["busy_bytes_s"] == pytest.approx(300e6, rel=0.01)
    # within each phase, busy handoffs are 6 ms slower beyond their priced bytes
    assert link["busy_extra_latency_s"] == pytest.approx(0.006, abs=1e-4)
    assert fit["busy_source"]["num_busy"] == fit["busy_source"]["num_idle"] == 24
    # unsplit, one rate between the two
    pooled = link_fit.fit_link_transfers(phases, KV, DEFAULT)["link"]
    assert 300e6 < pooled["bytes_s"] < 1e9 and "busy_bytes_s" not in pooled


def test_without_busy_transfers_the_split_fit_is_the_pooled_one() -> None:
    lone = _phase("lone", [100, 200, 400, 800, 1600, 3200, 150, 250, 350, 450, 550], 0.01,
                  400e6)
    for r in lone["records"]:  # the decode worker's own stamps: 2 ms + bytes / 400 MB/s
        tl = r["timeline"]
        tl["decode.kv_transfer_start_s"] = tl["decode.kv_transfer_end_s"] - (
            0.002 + r["input_len"] * KV / 400e6)
        r["send_s"] = 0.0
    split = link_fit.fit_link_transfers([lone], KV, DEFAULT, split_busy=True)
    assert split["link"] == link_fit.fit_link_transfers([lone], KV, DEFAULT)["link"]
    assert split["busy_source"]["num_busy"] == 0
