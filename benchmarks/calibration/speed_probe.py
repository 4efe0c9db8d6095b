"""A short prompt-speed probe run beside every judged rate (the `steps_load_drift` variant).

The fifth measurement (docs/calibration_history.md) showed the machine's prompt-step speed drifting by
10-15% between the calibration probe (taken first) and the judged runs minutes later, in
either direction. This probe measures that drift without touching a judged request: a
few seconds of lone prompts of known lengths (one at a time, 2-4 output tokens, its own
seeds), once right after the calibration probe (the reference) and once right before
each rate's repeats. Its measured prompt-step seconds (the workers' step metrics) over
the profile's price of the same prompts give a speed ratio; the ratio before a rate over
the reference's scales that rate's prompt price.
"""

from __future__ import annotations

from typing import Any

from benchmarks.calibration import step_metrics
from benchmarks.calibration.replay import latency_model, sent
from benchmarks.calibration.setup import Setup
from benchmarks.calibration.snapshot import contaminated
from splitserve.planner.cost_model import prefill_attn_pairs

NUM_REQUESTS = 20
RATE_RPS = 5.0
SEED_OFFSET = 500  # on top of the probe seed: never a judged run's seed
MIN_PROMPT_STEPS = 10


def config(setup: Setup, url: str, base: dict[str, Any], index: int) -> Any:
    """The bench config of the speed probe number `index` (0: the reference)."""
    from splitserve.bench import BenchConfig, LengthDist, Workload

    workload = Workload("speed_probe", LengthDist("uniform", 144, 32, 256),
                        LengthDist("uniform", 3, 2, 4), description="speed probe")
    return BenchConfig(url=url, **{**base, "workload": workload, "length_scale": 1.0},
                       arrival="constant", rate_rps=RATE_RPS, num_requests=NUM_REQUESTS,
                       max_concurrency=1, seed=setup.probe_seed + SEED_OFFSET + index)


def prompt_ratio(setup: Setup, phase: dict[str, Any], profile: dict[str, Any],
                 ) -> float | None:
    """Measured prompt-step seconds (prefill kind, every role) over the profile's price
    of the same prompts, each alone in its step (None: too few steps measured)."""
    measured = step_metrics.measured(phase)
    if not measured:
        return None
    real_s = sum(s.step_s.get("prefill", 0.0) for s in measured.values())
    num_steps = sum(s.num_steps.get("prefill", 0) for s in measured.values())
    if num_steps < MIN_PROMPT_STEPS or real_s <= 0:
        return None
    model = latency_model(setup, profile)
    budget = setup.token_budget
    sim_s = 0.0
    for r in sent(phase["records"]):
        done = 0
        while done < r["input_len"]:  # the engine cuts prompts to its token budget
            n = min(budget, r["input_len"] - done)
            sim_s += float(model.step_s(n, prefill_attn_pairs(n, done), done + n, 0, 0))
            done += n
    return real_s / sim_s if sim_s > 0 else None


def drift(setup: Setup, speed: list[dict[str, Any]], profile: dict[str, Any],
          rate: float) -> dict[str, Any]:
    """The prompt-speed drift for the judged runs at `rate`: the ratio measured right
    before them over the reference's (1.0 where either is missing or contaminated)."""
    def ratio(match: Any) -> float | None:
        phase = next((p for p in speed if match(p)), None)
        if phase is None or contaminated(phase):
            return None
        return prompt_ratio(setup, phase, profile)

    ref = ratio(lambda p: p.get("rate_rps") is None)
    at = ratio(lambda p: p.get("rate_rps") == rate)
    factor = at / ref if ref and at else 1.0
    return {"reference_ratio": ref, "rate_ratio": at, "drift": factor}
