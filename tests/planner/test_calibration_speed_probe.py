"""The prompt-speed drift (benchmarks/calibration/speed_probe.py), hand-checked."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.calibration import speed_probe, variants
from benchmarks.calibration.setup import Setup


class _Linear:
    """A prompt step: 10 ms + 1 ms per prompt token."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return 0.010 + 0.001 * num_prefill_tokens


@pytest.fixture(autouse=True)
def _linear_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed_probe, "latency_model", lambda setup, profile: _Linear())


def _phase(ratio: float, rate: float | None, foreign_cpu_s: float = 0.0) -> dict[str, Any]:
    # 10 prompts of 100 tokens (110 ms each) and 2 of 600, cut at the 512-token budget
    # into 512 + 88 (522 + 98 ms): 1100 + 2 * 620 ms at the profile's price
    records = [{"send_s": float(i), "input_len": 100 if i < 10 else 600} for i in range(12)]
    return {"rate_rps": rate, "records": records, "duration_s": 5.0,
            "foreign_cpu_s": foreign_cpu_s,
            "phase_metrics": {
                "prefill-0:splitserve_worker_steps_total{kind=prefill}": 14.0,
                "prefill-0:splitserve_worker_step_duration_seconds_sum{kind=prefill}":
                    ratio * 2.340}}


def test_ratio_prices_the_same_prompts_chunked_at_the_budget() -> None:
    setup = Setup()
    assert setup.token_budget == 512
    assert speed_probe.prompt_ratio(setup, _phase(1.3, None), {}) == pytest.approx(1.3)


def test_ratio_needs_step_metrics_and_enough_prompt_steps() -> None:
    phase = _phase(1.3, None)
    assert speed_probe.prompt_ratio(Setup(), {**phase, "phase_metrics": {}}, {}) is None
    few = {k: (3.0 if "steps_total" in k else v) for k, v in phase["phase_metrics"].items()}
    assert speed_probe.prompt_ratio(Setup(), {**phase, "phase_metrics": few}, {}) is None


def test_drift_is_the_rate_ratio_over_the_reference_and_one_when_unknown() -> None:
    setup = Setup()
    speed = [_phase(1.2, None), _phase(1.5, 2.0), _phase(0.9, 4.0, foreign_cpu_s=3.0)]
    assert speed_probe.drift(setup, speed, {}, 2.0)["drift"] == pytest.approx(1.25)
    # contaminated (another process used 60% of a core) or missing: no correction
    assert speed_probe.drift(setup, speed, {}, 4.0)["drift"] == 1.0
    assert speed_probe.drift(setup, speed, {}, 6.0)["drift"] == 1.0
    assert speed_probe.drift(setup, [], {}, 2.0)["drift"] == 1.0


def test_variant_scales_only_the_prompt_price_of_its_rate() -> None:
    fitted = {"overhead": {"prefill_scale": 1.3, "delivery_s": 0.001},
              "drift": {"2.0": {"drift": 0.8}, "4.0": {"drift": 1.0}}}
    at2 = variants.with_drift(fitted, 2.0)
    assert at2["overhead"] == {"prefill_scale": pytest.approx(1.04), "delivery_s": 0.001}
    assert variants.with_drift(fitted, 4.0)["overhead"]["prefill_scale"] == 1.3
    assert fitted["overhead"]["prefill_scale"] == 1.3  # the shared fit is left alone
