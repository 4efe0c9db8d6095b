"""The calibration's measured steps: worker /metrics scraped around a run, against the
simulator's steps (benchmarks/calibration/step_metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from benchmarks.calibration import snapshot, step_metrics
from splitserve.engine.engine_config import EngineConfig
from splitserve.metrics.phase import PhaseCounters
from splitserve.planner.fleet import Pool, SchedulerConfig
from splitserve.planner.simulator import simulate
from splitserve.planner.step_stats import StepSummary
from splitserve.planner.workload import Requests
from splitserve.worker.config import WorkerConfig
from splitserve.worker.metrics import WorkerMetrics

from .conftest import ConstantLatency


def _worker(name: str) -> tuple[PhaseCounters, Any]:
    counters = PhaseCounters()
    engine = SimpleNamespace(stats=lambda: {}, phase_counters=counters,
                             device_peaks=lambda: (1e12, 1e10))
    cfg = WorkerConfig(EngineConfig(model="unused"), role=name.split("-")[0], worker_id=name,
                       secret="s")
    return counters, WorkerMetrics(cfg, engine)  # type: ignore[arg-type]


def _step(counters: PhaseCounters, step_s: float, num_prefill: int, num_decode: int) -> None:
    counters.record_step(step_s, (num_prefill, 1.0, 1.0), (num_decode, 1.0, 1.0))


def _cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[PhaseCounters]]:
    """A 1-prefill / 2-decode cluster whose /metrics pages are real worker renders, and
    the step counters of its prefill-1, decode-1 and decode-2."""
    workers = {name: _worker(name) for name in ("prefill-1", "decode-1", "decode-2")}
    pages = {f"http://{name}": m for name, (_, m) in workers.items()}
    monkeypatch.setattr(snapshot, "_scrape", lambda url: snapshot.parse_exposition(
        pages[url].render(0.0)[0].decode()) if url in pages else {})
    cluster = SimpleNamespace(url="http://router", workers=lambda: [
        SimpleNamespace(name=name, url=f"http://{name}") for name in workers])
    return cluster, [workers[n][0] for n in ("prefill-1", "decode-1", "decode-2")]


def test_scraped_deltas_give_each_roles_steps_of_the_run_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, (prefill, dec1, dec2) = _cluster(monkeypatch)
    _step(prefill, 0.5, 300, 0)  # before the run: not counted
    _step(dec1, 0.02, 0, 3)
    before = snapshot.snapshot(cluster, {})
    _step(prefill, 0.2, 128, 0)
    _step(prefill, 0.3, 200, 0)
    _step(dec1, 0.04, 0, 4)
    _step(dec1, 0.06, 10, 2)  # a short prompt prefilled on the decode worker
    _step(dec2, 0.02, 0, 6)
    after = snapshot.snapshot(cluster, {})

    got = step_metrics.measured(snapshot.delta(before, after))
    assert got is not None and set(got) == {"prefill", "decode"}
    assert dict(got["prefill"].num_steps) == {"prefill": 2, "decode": 0, "mixed": 0}
    assert got["prefill"].mean_step_s("prefill") == pytest.approx(0.25)
    assert got["prefill"].num_prefill_tokens == 328
    dec = got["decode"]  # both decode workers added up
    assert dict(dec.num_steps) == {"prefill": 0, "decode": 2, "mixed": 1}
    assert dec.mean_step_s("decode") == pytest.approx(0.03)
    assert dec.mean_decode_batch == pytest.approx(12 / 3)


def test_batch_histogram_counts_the_runs_decode_steps_per_batch_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, (prefill, dec1, dec2) = _cluster(monkeypatch)
    _step(dec1, 0.02, 0, 5)  # before the run: not counted
    before = snapshot.snapshot(cluster, {})
    _step(prefill, 0.2, 128, 0)  # no decodes: not a batch
    for batch in (16, 17, 17):  # each size apart up to 32, where steps jump in cost
        _step(dec1, 0.02, 0, batch)
    _step(dec2, 0.02, 0, 3)
    _step(dec2, 0.05, 0, 40)  # bucket (32, 40]: spread over its 8 sizes
    after = snapshot.snapshot(cluster, {})

    got = step_metrics.decode_batch_histogram(snapshot.delta(before, after))
    assert got == {3: 1.0, 16: 1.0, 17: 2.0, **{b: 1 / 8 for b in range(33, 41)}}
    assert sum(got.values()) == pytest.approx(5.0)
    # raw files from before the buckets were scraped
    assert step_metrics.decode_batch_histogram({"phase_metrics": {
        "decode-1:splitserve_worker_steps_total{kind=decode}": 3.0}}) is None


def test_runs_recorded_without_step_metrics_give_none() -> None:
    assert step_metrics.measured({"phase_metrics": {
        "decode-1:splitserve_worker_phase_tokens_total{phase=decode}": 10.0}}) is None
    assert step_metrics.measured({}) is None


def _summary(decode_steps: int, decode_s: float, batch: float) -> StepSummary:
    return StepSummary({"decode": decode_steps}, {"decode": decode_steps * decode_s},
                       round(decode_steps * batch), 0)


def test_pool_uses_clean_repeats_and_counts_per_run() -> None:
    rows = [{"topology": "2 mixed", "rate_rps": 4.0, "contaminated": c} for c in
            (False, True, False)]
    real = [_summary(100, 0.03, 2.0), _summary(500, 0.09, 9.0), _summary(120, 0.03, 2.5)]
    # simulated: 4 draws per repeat, summed
    sim = [_summary(400, 0.025, 2.0), _summary(400, 0.025, 2.0), _summary(480, 0.025, 2.0)]
    arrays = [{"measured_steps": {"mixed": r}, "v": {"step_stats": {"mixed": s},
                                                     "num_draws": 4}}
              for r, s in zip(real, sim, strict=True)]
    (group,) = step_metrics.pool(rows, arrays, "v")
    assert group["num_repeats"] == 2 and not group["all_contaminated"]
    assert group["real"]["num_steps"]["decode"] == 110  # (100 + 120) / 2 clean repeats
    assert group["sim"]["num_steps"]["decode"] == 110  # (400 + 480) / 8 draws
    assert group["real"]["mean_step_s"]["decode"] == pytest.approx(0.03)
    assert group["real"]["mean_decode_batch"] == pytest.approx((200 + 300) / 220, abs=1e-3)
    table = step_metrics.markdown([group])
    assert "| 2 mixed | 4 | mixed | 2 |" in table
    assert "30.0 / 25.0 (-17%)" in table  # decode step ms, real / sim (error)


def test_simulated_replay_reports_steps_like_the_metrics() -> None:
    # two requests alone on one mixed instance: what a worker would export for them
    reqs = Requests(np.array([0.0, 5.0]), np.array([40, 80]), np.array([6, 3]))
    res = simulate(reqs, [Pool("mixed", 1, ConstantLatency(0.1, 0.02))],
                   SchedulerConfig(token_budget=64, max_num_seqs=8))
    assert res.steps is not None
    got = step_metrics.per_run(res.steps.by_role()["mixed"], 1)
    assert got == {"num_steps": {"prefill": 3, "decode": 5 + 2, "mixed": 0},
                   "mean_step_s": {"prefill": 0.1, "decode": 0.02, "mixed": None},
                   "mean_decode_batch": 1.0, "num_prefill_tokens": 120}


def test_factors_are_measured_over_simulated_step_seconds() -> None:
    real = {"prefill": StepSummary({"prefill": 10}, {"prefill": 0.75}, 0, 2000),
            "decode": StepSummary({"decode": 100, "mixed": 2}, {"decode": 2.2, "mixed": 0.1},
                                  300, 20)}
    # the simulation (2 draws, summed) batched the prompts into fewer, longer steps
    sim = {"num_draws": 2, "step_stats": {
        "prefill": StepSummary({"prefill": 16}, {"prefill": 1.0}, 0, 4000),
        "decode": StepSummary({"decode": 220, "mixed": 4}, {"decode": 4.4, "mixed": 0.2},
                              600, 40)}}
    # decode: mean step 22 ms real against 20 ms simulated
    assert step_metrics.decode_factor(real, sim) == pytest.approx(1.1)
    # prompts: 0.75 s of prompt steps real against 0.5 s per simulated run; the decode
    # worker's short-prompt (mixed) steps are left out
    assert step_metrics.prompt_factor(real, sim) == pytest.approx(1.5)
    no_prompts = {"decode": real["decode"]}
    assert step_metrics.prompt_factor(no_prompts, sim) is None
    assert step_metrics.decode_factor({"prefill": real["prefill"]}, sim) is None


def test_step_gap_is_the_inter_token_gap_beyond_the_decode_step() -> None:
    key = "mixed-0:splitserve_worker_"
    phase = {"phase_metrics": {
        key + "steps_total{kind=decode}": 40.0,
        key + "step_duration_seconds_sum{kind=decode}": 0.8,  # 20 ms per decode step
        key + "steps_total{kind=prefill}": 4.0,
        key + "step_duration_seconds_sum{kind=prefill}": 0.2},
        # the first gap (prompt step + first decode, or the KV handoff) is left out
        "records": [{"success": True, "itl_s": [0.09] + [0.0215] * 10} for _ in range(4)]
        + [{"success": False, "itl_s": [0.5, 0.5]}]}
    assert step_metrics.step_gap_s(phase) == pytest.approx(0.0015)
    phase["records"] = phase["records"][:1]  # too few gaps to tell
    assert step_metrics.step_gap_s(phase) is None
    assert step_metrics.step_gap_s({"records": []}) is None
