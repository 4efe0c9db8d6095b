"""The gauge's KV handoff factor (benchmarks/calibration/gauge.py), hand-checked."""

from __future__ import annotations

import pytest

from benchmarks.calibration import fit_load, gauge
from benchmarks.calibration.replay import Link


def _rec(input_len: int, handoff_s: float | None, success: bool = True) -> dict[str, object]:
    tl = {} if handoff_s is None else {"prefill.engine_first_token_s": 5.0,
                                       "decode.kv_transfer_end_s": 5.0 + handoff_s}
    return {"success": success, "input_len": input_len, "timeline": tl}


def test_handoffs_over_their_price() -> None:
    # 1,000 bytes per token over 1 MB/s + 10 ms: a 100-token KV is priced 110 ms
    link = Link(bytes_s=1e6, latency_s=0.010)
    profile = {"kv_bytes_per_token": 1000}
    records = [_rec(100, 0.220) for _ in range(gauge.MIN_HANDOFFS)]
    records += [_rec(100, None), _rec(100, 9.0, success=False)]  # colocated / failed
    assert gauge.handoff_factor(records, profile, link) == pytest.approx(2.0)
    assert gauge.handoff_factor(records[:gauge.MIN_HANDOFFS - 1], profile, link) == 1.0


def test_a_handoff_factor_slows_the_link_it_prices() -> None:
    fitted = {"base": {"link": {"bytes_s": 1e6, "latency_s": 0.01}, "lines": {
        k: None for k in ("decode_factor", "prompt_factor", "handoff_latency_s", "join_s")},
        "handoff": {}}, "overhead": {"prefill_scale": 1.0}, "decode": {"scale": 1.0, "per_seq_s": 0.0},
        "prompt_factor": 1.0, "gap": {"gap_s": 0.0, "per_seq_s": 0.0}}
    plain = fit_load.terms(fitted, 100.0)["link"]
    slow = fit_load.terms(gauge.scaled(fitted, 1.0, 1.0, handoff=2.0), 100.0)["link"]
    assert (slow.bytes_s, slow.latency_s) == pytest.approx((plain.bytes_s / 2,
                                                            plain.latency_s * 2))
