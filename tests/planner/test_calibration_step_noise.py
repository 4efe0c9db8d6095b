"""The prompt-step jitter measured on real steps the router timelines isolate."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.calibration import step_noise
from benchmarks.calibration.setup import Setup


class _Linear:
    """A prompt step costs 1 ms + 0.25 ms per token, plus 0.5 ms per decoding sequence."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return 0.001 + 0.00025 * num_prefill_tokens + 0.0005 * num_decode_seqs


def _req(n: int, start: float, first: float, role: str = "prefill", worker: str = "w0",
         done: float | None = None, success: bool = True) -> dict[str, object]:
    tl: dict[str, object] = {
        "route_kind": "colocated" if role == "full" else "disaggregated",
        "workers": {role: worker},
        f"{role}.engine_first_scheduled_s": start, f"{role}.engine_first_token_s": first}
    if done is not None:
        tl[f"{role}.worker_finished_s"] = done
    return {"success": success, "send_s": 0.0, "input_len": n, "output_len": 40,
            "tpot_s": 0.01, "timeline": tl}


def test_only_steps_whose_whole_content_the_timelines_show_are_kept() -> None:
    records = [
        _req(100, 1.0, 1.1), _req(50, 1.0, 1.1),  # scheduled and finished together: one step
        _req(200, 2.0, 2.08),  # alone
        _req(1500, 3.0, 3.6),  # three chunks: more than one step
        _req(60, 3.2, 3.3),  # ran while the long prompt's chunks were in flight
        _req(300, 4.0, 4.1), _req(400, 4.0, 4.2),  # together, but one was cut: two steps
        _req(80, 5.0, 5.05, success=False),  # failed
        _req(70, 5.0005, 5.0505, worker="w1"),  # another worker: its own step
    ]
    steps = step_noise.isolated_steps(records, token_budget=512)
    got = sorted((round(s["seconds"], 4), tuple(sorted(s["input_lens"]))) for s in steps)
    assert got == [(0.05, (70,)), (0.08, (200,)), (0.1, (50, 100))]
    assert all(s["num_decode"] == 0 for s in steps)


def test_a_mixed_worker_step_counts_the_sequences_decoding_there() -> None:
    records = [
        _req(100, 0.0, 0.05, "full", done=9.0),  # decoding from 0.05 to 9.0
        _req(30, 0.5, 0.55, "full", done=0.6),  # decoding until 0.6 only
        _req(200, 2.0, 2.07, "full", done=3.0),
        _req(90, 0.1, 0.15, "full", worker="other", done=9.0),  # another worker
    ]
    steps = {tuple(s["input_lens"]): s for s in step_noise.isolated_steps(records, 512)}
    assert steps[(200,)]["num_decode"] == 1
    # the one decoding sequence: its prompt plus ~(2.0 - 0.05) / 10 ms generated (<= 40)
    assert steps[(200,)]["decode_ctx"] == 100 + 40
    assert steps[(30,)]["num_decode"] == 1


def _phase(name: str, speed: float, sigma: float, rng: np.random.Generator,
           num: int) -> dict[str, object]:
    """Lone steps one second apart, each `speed` x its price x a lognormal(0, sigma)."""
    records = []
    for i in range(num):
        n = int(rng.integers(16, 500))
        seconds = speed * _Linear().step_s(n, 0, n, 0, 0) * float(np.exp(rng.normal(0, sigma)))
        records.append(_req(n, float(i), float(i) + seconds))
    return {"phase": name, "records": records}


def test_cv_is_the_steps_spread_about_each_phase_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_noise, "latency_model", lambda setup, profile: _Linear())
    rng = np.random.default_rng(3)
    sigma = 0.2
    # three phases at different speeds: the speed is the prompt factor's, not noise
    phases = [_phase("poisson3", 1.2, sigma, rng, 200), _phase("poisson5", 1.5, sigma, rng, 200),
              _phase("poisson7", 1.9, sigma, rng, 200),
              _phase("lone", 1.0, 1.0, rng, 50)]  # only the Poisson phases count
    out = step_noise.measure(Setup(), {}, phases)
    assert out is not None and out["num_steps"] == 600
    assert out["prefill_jitter_cv"] == pytest.approx(np.sqrt(np.expm1(sigma ** 2)), rel=0.1)
    speeds = [p["price_factor"] for p in out["phases"]]
    assert speeds == pytest.approx([1.2, 1.5, 1.9], rel=0.05)
    # too few isolated steps to tell: no measurement (the residual fit stands)
    few = [_phase("poisson3", 1.2, sigma, rng, step_noise.MIN_STEPS - 1)]
    assert step_noise.measure(Setup(), {}, few) is None
