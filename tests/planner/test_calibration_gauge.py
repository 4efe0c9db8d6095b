"""The speed gauge's factors (benchmarks/calibration/gauge.py), hand-checked."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from benchmarks.calibration import fit_load, gauge
from benchmarks.calibration.setup import Setup
from splitserve.planner.step_stats import StepSummary


class _Linear:
    """A decode step of n sequences over c KV tokens: 10 ms + 1 ms per sequence + 1 us per
    KV token."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return 0.010 + 0.001 * num_decode_seqs + 1e-6 * decode_ctx_tokens


def _fitted() -> dict[str, Any]:
    return {"decode": {"scale": 0.9, "per_seq_s": 0.001},
            "gap": {"gap_s": 0.002, "per_seq_s": 0.0005}, "prompt_factor": 1.1}


def _phase(decode_s: float, prompt_s: float, foreign_cpu_s: float = 0.0) -> dict[str, Any]:
    # 4 requests of 100 prompt + 3 output tokens: they decode over 101 and 102 KV tokens
    # (mean 101.5); 100 decode steps of 2 sequences each, 8 prompt steps
    records = [{"success": True, "send_s": float(i), "input_len": 100, "output_len": 3}
               for i in range(4)]
    w = "mixed-0:"
    return {"records": records, "duration_s": 20.0, "foreign_cpu_s": foreign_cpu_s,
            "phase_metrics": {
                w + "splitserve_worker_steps_total{kind=decode}": 100.0,
                w + "splitserve_worker_step_duration_seconds_sum{kind=decode}": decode_s,
                w + "splitserve_worker_steps_total{kind=prefill}": 8.0,
                w + "splitserve_worker_step_duration_seconds_sum{kind=prefill}": prompt_s,
                w + "splitserve_worker_decode_batch_size_sum": 200.0}}


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stub the profile (linear) and the replay: the simulated gauge ran 0.5 s of prompt
    steps; records the fit each replay got."""
    seen: list[dict[str, Any]] = []

    def replay(setup: Setup, topology: str, records: Any, profile: Any,
               fitted: dict[str, Any], rate: float) -> dict[str, Any]:
        seen.append(fitted)
        summary = StepSummary({"prefill": 8}, {"prefill": 1.0}, 0, 800)
        # 100 decode steps (2 draws): half of 1 sequence, half of 3
        return {"num_draws": 2, "step_stats": {"mixed": summary},
                "decode_batches": {"mixed": Counter({1: 50, 3: 50})}}

    monkeypatch.setattr(fit_load, "latency_model", lambda setup, profile: _Linear())
    monkeypatch.setattr(fit_load, "replay_fitted", replay)
    monkeypatch.setattr(fit_load, "offered_rate", lambda *args: 100.0)
    return seen


def test_factors_price_the_gauge_at_its_own_batch(simulated: list[dict[str, Any]]) -> None:
    # profile at batch 2 over 2 * 101.5 KV tokens: 12.203 ms; the fit's price:
    # 0.9 * 12.203 + 1 * 2 = 12.983 ms; measured 14.0 ms per decode step
    got = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted())
    price = 0.9 * (0.010 + 0.002 + 203e-6) + 0.002
    assert got["decode"] == pytest.approx(0.014 / price)
    # prompt steps: 0.6 s measured against 1.0 s over 2 simulated draws
    assert got["prompt"] == pytest.approx(1.2)
    # the prompt replay already runs at the gauge's decode speed
    assert simulated[0]["decode"]["scale"] == pytest.approx(0.9 * got["decode"])


def test_a_contaminated_or_unmeasured_gauge_corrects_nothing(
        simulated: list[dict[str, Any]]) -> None:
    # another process used 10% of a core during the 20-s gauge
    dirty = _phase(1.40, 0.6, foreign_cpu_s=2.0)
    assert gauge.factors(Setup(), "2 mixed", dirty, {}, _fitted()) == {
        "decode": 1.0, "prompt": 1.0}
    bare = {**_phase(1.40, 0.6), "phase_metrics": {}}
    assert gauge.factors(Setup(), "2 mixed", bare, {}, _fitted()) == {
        "decode": 1.0, "prompt": 1.0}
    assert simulated == []


def test_too_few_prompt_seconds_leave_the_prompt_price(simulated: list[dict[str, Any]]) -> None:
    got = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.1), {}, _fitted())
    assert got["prompt"] == 1.0 and got["decode"] != 1.0


def test_scaled_moves_every_worker_price_and_leaves_the_fit_alone() -> None:
    fitted = _fitted()
    got = gauge.scaled(fitted, 1.2, 0.5)
    assert got["decode"] == {"scale": pytest.approx(1.08), "per_seq_s": pytest.approx(0.0012)}
    assert got["gap"] == {"gap_s": pytest.approx(0.0024), "per_seq_s": pytest.approx(0.0006)}
    assert got["prompt_factor"] == pytest.approx(0.55)
    assert fitted == _fitted()


def test_replay_uses_the_gauge_before_the_run_or_the_run_itself(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(gauge, "factors", lambda setup, topology, phase, profile, fitted,
                        spread=False, hist=False, replayed=False, handoff=False: {
                            "decode": 2.0 if phase is run["gauge"] else 3.0, "prompt": 1.0})
    monkeypatch.setattr(fit_load, "replay_run",
                        lambda setup, topology, records, profile, fitted: (
                            calls.append((records, fitted)) or {}, {"decode": 1.0}))
    run = {"records": ["judged"], "gauge": {"records": ["gauge"]}}
    _, terms = gauge.replay_run(Setup(), "2 mixed", run, {}, _fitted())
    assert terms["speed"] == {"decode": 2.0, "prompt": 1.0}
    assert calls[-1][0] == ["judged"]  # the judged requests are replayed, not the gauge's
    assert calls[-1][1]["decode"]["scale"] == pytest.approx(1.8)
    _, terms = gauge.replay_run(Setup(), "2 mixed", run, {}, _fitted(), oracle=True)
    assert terms["speed"]["decode"] == 3.0
    # a raw file from before the gauge: steps_load's own prices
    _, terms = gauge.replay_run(Setup(), "2 mixed", {"records": []}, {}, _fitted())
    assert terms["speed"] == {"decode": 1.0, "prompt": 1.0}
    assert calls[-1][1] == _fitted()


def test_front_adds_the_gauges_front_end_latency_to_the_first_token_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gauge, "factors", lambda *a, **k: {"decode": 1.0, "prompt": 1.0})
    sim = {"ttft_s": np.full(400, 0.2), "tpot_s": np.full(400, 0.03)}
    monkeypatch.setattr(fit_load, "replay_run", lambda *a: (sim, {}))
    # the gauge's requests spent 12 or 32 ms outside the worker; lone ones 12 ms
    lat = [0.012, 0.032] * 20
    gauge_records = [{"success": True, "ttft_s": 0.1 + x,
                      "timeline": {"full.worker_received_s": 0.0,
                                   "full.engine_first_token_s": 0.1}} for x in lat]
    run = {"records": [], "gauge": {"records": gauge_records}}
    fitted = {**_fitted(), "front_lone_s": 0.012}
    got, terms = gauge.replay_run(Setup(), "2 mixed", run, {}, fitted, front=True)
    assert set(np.round(got["ttft_s"], 6)) == {0.2, 0.22}
    assert 0.2 < float(np.mean(got["ttft_s"])) < 0.22
    assert np.array_equal(got["tpot_s"], sim["tpot_s"])
    assert "front_excess_p50_s" in terms["speed"]
    # without the option, or without a gauge, TTFT is the simulation's
    got, _ = gauge.replay_run(Setup(), "2 mixed", run, {}, fitted)
    assert np.array_equal(got["ttft_s"], sim["ttft_s"])
    got, _ = gauge.replay_run(Setup(), "2 mixed", {"records": []}, {}, fitted, front=True)
    assert np.array_equal(got["ttft_s"], sim["ttft_s"])


def _records(ttft_s: float, tpot_s: float, n: int = 10) -> list[dict[str, Any]]:
    return [{"success": True, "send_s": float(i), "input_len": 10, "output_len": 3,
             "ttft_s": ttft_s, "tpot_s": tpot_s, "first_itl_s": None, "median_itl_s": None}
            for i in range(n)]


def test_measured_baseline_pools_the_gauges_of_the_clean_repeats() -> None:
    from benchmarks.calibration import pooled
    from benchmarks.calibration.replay import real_arrays

    def run(repeat: int, gauge_ttft_s: float) -> dict[str, Any]:
        return {"topology": "1P1D", "rate_rps": 2.0, "repeat": repeat,
                "records": _records(0.100, 0.020),
                "gauge": {"records": _records(gauge_ttft_s, 0.022)}}

    # repeat 2 was contaminated: its gauge (a wild 1 s TTFT) is left out as it is
    runs = [run(0, 0.110), run(1, 0.110), run(2, 1.0)]
    real = pooled.pool([real_arrays(r["records"]) for r in runs[:2]])
    slos = {"q50": (0.100, 0.020), "q75": (0.100, 0.020), "q90": (0.100, 0.020)}
    group = {"topology": "1P1D", "rate_rps": 2.0,
             "excluded_repeats": [{"repeat": 2, "foreign_cpu_s": 9.0}],
             "slos_at_quantiles": {k: {"ttft_s": a, "tpot_s": b} for k, (a, b) in slos.items()},
             "real": pooled.stats_at(real, (2.0, 0.1), slos)}
    (got,) = gauge.measured_baseline(runs, [group], (2.0, 0.1))
    assert got["num_gauges"] == 2
    assert got["error"]["p90_ttft_rel_err"] == pytest.approx(0.10)
    assert got["error"]["p90_tpot_rel_err"] == pytest.approx(0.10)
    # every gauge request misses the SLOs set on the judged requests: 100 points lower
    assert got["error"]["attainment_pp@q90"] == pytest.approx(-100.0)
    assert "| 1P1D | 2 | 2 | +10% | +10% | -100 / -100 / -100 |" in gauge.baseline_markdown([got])
    # raw files from before the gauge: no baseline
    assert gauge.measured_baseline([{**r, "gauge": None} for r in runs], [group],
                                   (2.0, 0.1)) == []


def test_spread_ratio_is_the_mean_price_over_the_price_at_the_mean_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class _Concave:
        """A decode step: 10 ms + 2 ms per sequence up to 2, then 0.5 ms per sequence."""

        def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
                   prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int,
                   ) -> float:
            n = num_decode_seqs
            return 0.010 + 0.002 * min(n, 2) + 0.0005 * max(n - 2, 0)

    monkeypatch.setattr(fit_load, "latency_model", lambda setup, profile: _Concave())
    fitted = {"decode": {"scale": 1.0, "per_seq_s": 0.0}}
    # batches 1 and 3 (mean 2): prices 12 and 14.5 ms, mean 13.25 against 14 at batch 2
    got = gauge.spread_ratio(Setup(), {}, fitted, Counter({1: 5, 3: 5}), 100.0)
    assert got == pytest.approx(13.25 / 14.0)
    # one batch size: no spread
    assert gauge.spread_ratio(Setup(), {}, fitted, Counter({3: 7}), 100.0) == pytest.approx(1.0)
    assert gauge.spread_ratio(Setup(), {}, fitted, Counter(), 100.0) == 1.0
    # a linear price has no such gap
    monkeypatch.setattr(fit_load, "latency_model", lambda setup, profile: _Linear())
    assert gauge.spread_ratio(Setup(), {}, fitted, Counter({1: 5, 3: 5}), 0.0) == (
        pytest.approx(1.0))


def test_spread_divides_the_decode_factor_by_the_gauges_spread_ratio(
        simulated: list[dict[str, Any]]) -> None:
    plain = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted())
    spread = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted(), spread=True)
    # the stub's batches (1 and 3) under the linear profile plus 1 ms per sequence: the
    # fit's price is linear too, so the ratio is the mean price over the price at the mean
    ratio = spread["spread_ratio"]
    assert ratio == pytest.approx(gauge.spread_ratio(
        Setup(), {}, _fitted(), Counter({1: 50, 3: 50}), 101.5))
    assert spread["decode"] == pytest.approx(plain["decode"] / ratio)
    # the prompt factor is read off a replay at the corrected decode speed
    assert simulated[-1]["decode"]["scale"] == pytest.approx(0.9 * spread["decode"])


def test_hist_reads_the_spread_off_the_gauges_measured_batches(
        simulated: list[dict[str, Any]]) -> None:
    phase = _phase(1.40, 0.6)
    w = "mixed-0:splitserve_worker_decode_batch_size_bucket{le=%s}"
    # cumulative buckets: 100 decode steps of 2 sequences each - no spread at all
    phase["phase_metrics"].update({w % "1.0": 0.0, w % "2.0": 100.0, w % "3.0": 100.0,
                                   w % "+Inf": 100.0})
    plain = gauge.factors(Setup(), "2 mixed", phase, {}, _fitted())
    hist = gauge.factors(Setup(), "2 mixed", phase, {}, _fitted(), hist=True)
    assert hist["spread_from"] == "measured"
    assert hist["spread_ratio"] == pytest.approx(1.0)
    assert hist["decode"] == pytest.approx(plain["decode"])
    # without the histogram (raw files from before it): the simulated spread, as `spread`
    bare = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted(), hist=True)
    spread = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted(), spread=True)
    assert bare["spread_from"] == "simulated"
    assert bare["decode"] == pytest.approx(spread["decode"])


def test_replayed_reads_the_decode_factor_against_the_gauges_replay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the simulated gauge's decode steps cost 10 ms x the fit's decode scale (whatever the
    # simulation adds to a step, say a host share, is inside that mean): the factor must
    # make them the measured 14 ms, not the price at the mean batch
    def replay(setup: Setup, topology: str, records: Any, profile: Any,
               fitted: dict[str, Any], rate: float) -> dict[str, Any]:
        step_s = 0.010 * fitted["decode"]["scale"]
        summary = StepSummary({"prefill": 8, "decode": 100},
                              {"prefill": 1.0, "decode": 100 * step_s}, 200, 800)
        return {"num_draws": 1, "step_stats": {"mixed": summary},
                "decode_batches": {"mixed": Counter({2: 100})}}

    monkeypatch.setattr(fit_load, "latency_model", lambda setup, profile: _Linear())
    monkeypatch.setattr(fit_load, "replay_fitted", replay)
    monkeypatch.setattr(fit_load, "offered_rate", lambda *args: 100.0)
    plain = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted())
    got = gauge.factors(Setup(), "2 mixed", _phase(1.40, 0.6), {}, _fitted(), replayed=True)
    assert got["decode"] == pytest.approx(0.014 / (0.010 * 0.9))
    assert got["decode"] != pytest.approx(plain["decode"])
    # the prompt factor is read off the replay at that decode speed
    assert got["prompt"] == pytest.approx(0.6 / 1.0)
