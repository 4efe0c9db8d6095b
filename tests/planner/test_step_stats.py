"""The simulator's step statistics (what a worker's step metrics measure), hand-checked."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner.fleet import Pool, SchedulerConfig, TransferConfig
from splitserve.planner.simulator import simulate
from splitserve.planner.step_stats import StepSummary, StepTally
from splitserve.planner.workload import Requests, fixed_workload, generate

from .conftest import ConstantLatency


def _requests(arrivals: list[float], input_lens: list[int], output_lens: list[int]) -> Requests:
    return Requests(np.array(arrivals), np.array(input_lens), np.array(output_lens))


def test_lone_requests_count_one_prompt_step_and_output_minus_one_decodes() -> None:
    model = ConstantLatency(prefill_s=0.2, decode_s=0.03)
    # far apart: each request runs alone
    res = simulate(_requests([0.0, 10.0], [100, 300], [5, 8]), [Pool("mixed", 1, model)])
    assert res.steps is not None
    mixed = res.steps.by_role()["mixed"]
    assert dict(mixed.num_steps) == {"prefill": 2, "decode": 4 + 7, "mixed": 0}
    assert mixed.mean_step_s("prefill") == pytest.approx(0.2)
    assert mixed.mean_step_s("decode") == pytest.approx(0.03)
    assert mixed.mean_step_s("mixed") is None
    assert mixed.mean_decode_batch == pytest.approx(1.0)
    assert mixed.num_prefill_tokens == 400
    assert sum(mixed.num_steps.values()) == res.num_steps


def test_chunked_prompt_beside_running_decodes_makes_mixed_steps() -> None:
    model = ConstantLatency(prefill_s=0.2, decode_s=0.03)
    sched = SchedulerConfig(token_budget=64, max_num_seqs=8)
    # A (10 tokens) decodes while B's 120-token prompt arrives: B is chunked beside A's
    # decode (budget 64 - 1 decode = 63, then 57 tokens), so two mixed steps of batch 1
    res = simulate(_requests([0.0, 0.21], [10, 120], [20, 3]), [Pool("mixed", 1, model)],
                   sched)
    assert res.steps is not None
    s = res.steps.by_role()["mixed"]
    assert s.num_steps["prefill"] == 1 and s.num_steps["mixed"] == 2
    assert s.num_prefill_tokens == 130
    # every generated token after each request's first is one decode in some step
    assert s.num_decode_seqs == (20 - 1) + (3 - 1)
    steps_with_decodes = s.num_steps["decode"] + s.num_steps["mixed"]
    assert s.mean_decode_batch == pytest.approx(21 / steps_with_decodes)
    assert s.mean_decode_batch > 1  # B's decodes ran beside A's


def test_split_fleet_prefill_role_only_prompt_steps_decode_role_only_decodes() -> None:
    model = ConstantLatency(prefill_s=0.1, decode_s=0.02)
    reqs = generate(fixed_workload(200, 10), rate=5.0, num_requests=40, seed=1)
    res = simulate(reqs, [Pool("prefill", 1, model), Pool("decode", 1, model)],
                   transfer=TransferConfig(link_bw_bytes_s=1e9, latency_s=1e-3))
    assert res.steps is not None and res.num_unfinished == 0
    roles = res.steps.by_role()
    assert roles["prefill"].num_steps["decode"] == roles["prefill"].num_steps["mixed"] == 0
    assert roles["prefill"].num_prefill_tokens == 40 * 200
    assert roles["decode"].num_steps["prefill"] == roles["decode"].num_steps["mixed"] == 0
    assert roles["decode"].num_decode_seqs == 40 * 9
    # batching: fewer decode steps than decode tokens once requests overlap
    assert roles["decode"].num_steps["decode"] <= 40 * 9
    assert roles["decode"].mean_step_s("decode") == pytest.approx(0.02)


def test_by_role_adds_up_instances_and_summary_round_trips() -> None:
    tally = StepTally(["mixed", "mixed", "decode"])
    tally.add(0, 128, 0, 0.5)
    tally.add(1, 0, 4, 0.04)
    tally.add(1, 32, 2, 0.3)
    tally.add(2, 0, 8, 0.06)
    roles = tally.by_role()
    assert set(roles) == {"mixed", "decode"}
    mixed = roles["mixed"]
    assert dict(mixed.num_steps) == {"prefill": 1, "decode": 1, "mixed": 1}
    assert mixed.mean_decode_batch == pytest.approx(3.0)
    assert mixed.to_dict() == {
        "num_steps": {"prefill": 1, "decode": 1, "mixed": 1},
        "mean_step_s": {"prefill": 0.5, "decode": 0.04, "mixed": 0.3},
        "mean_decode_batch": 3.0, "num_prefill_tokens": 160}
    assert roles["decode"].mean_step_s("decode") == pytest.approx(0.06)


def test_summary_rejects_unknown_kinds_and_negatives() -> None:
    with pytest.raises(ValueError, match="kinds"):
        StepSummary({"chunk": 1}, {}, 0, 0)
    with pytest.raises(ValueError, match="negative"):
        StepSummary({"decode": -1}, {}, 0, 0)


def test_step_gap_delays_every_step_but_is_not_step_time() -> None:
    model = ConstantLatency(prefill_s=0.2, decode_s=0.03)
    reqs = _requests([1.0], [100], [5])
    base = simulate(reqs, [Pool("mixed", 1, model)], SchedulerConfig())
    gap = simulate(reqs, [Pool("mixed", 1, model)], SchedulerConfig(step_gap_s=0.002))
    # one gap before the prompt step, one before each of the 4 decode steps
    assert gap.ttft_s[0] == pytest.approx(base.ttft_s[0] + 0.002)
    assert gap.tpot_s[0] == pytest.approx(0.03 + 0.002)
    assert gap.steps is not None and base.steps is not None
    # the step durations (what a worker's step metrics time) do not include it
    assert gap.steps.by_role() == base.steps.by_role()


def test_step_gap_per_seq_grows_with_the_sequences_each_step_decodes() -> None:
    model = ConstantLatency(prefill_s=0.2, decode_s=0.03)
    sched = SchedulerConfig(step_gap_s=0.001, step_gap_per_seq_s=0.0005)
    alone = simulate(_requests([1.0], [100], [5]), [Pool("mixed", 1, model)], sched)
    # the prompt step decodes nothing: its gap is the fixed part only
    base = simulate(_requests([1.0], [100], [5]), [Pool("mixed", 1, model)])
    assert alone.ttft_s[0] == pytest.approx(base.ttft_s[0] + 0.001)
    assert alone.tpot_s[0] == pytest.approx(0.03 + 0.001 + 0.0005)
    # A's prompt alone; then A's first decode with B's prompt (one sequence decoding);
    # three decode steps of both; B's last decode alone
    pair = simulate(_requests([1.0, 1.0], [100, 100], [5, 5]), [Pool("mixed", 1, model)],
                    sched)
    mixed_s, both_s, alone_s = 0.001 + 0.0005 + 0.2, 0.001 + 2 * 0.0005 + 0.03, 0.0315
    assert pair.tpot_s == pytest.approx([(mixed_s + 3 * both_s) / 4,
                                         (3 * both_s + alone_s) / 4])
    assert pair.steps is not None
    # the gaps are not step time
    assert pair.steps.by_role()["mixed"].step_s["decode"] == pytest.approx(4 * 0.03)


def test_step_gap_per_seq_applies_on_a_split_fleets_decode_worker() -> None:
    model = ConstantLatency(prefill_s=0.2, decode_s=0.03)
    pools = [Pool("prefill", 1, model), Pool("decode", 1, model)]
    reqs = _requests([1.0], [100], [6])
    link = TransferConfig(link_bw_bytes_s=1e12, latency_s=0.0)
    base = simulate(reqs, pools, SchedulerConfig(), link)
    gap = simulate(reqs, pools, SchedulerConfig(step_gap_per_seq_s=0.002), link)
    # the prefill step decodes nothing; each of the 5 decode steps waits 2 ms more
    assert gap.ttft_s[0] == pytest.approx(base.ttft_s[0])
    assert gap.tpot_s[0] == pytest.approx(base.tpot_s[0] + 0.002)


@pytest.mark.parametrize("bad", [-0.001, float("inf"), float("nan")])
@pytest.mark.parametrize("name", ["step_gap_s", "step_gap_per_seq_s"])
def test_step_gap_must_be_finite_and_non_negative(name: str, bad: float) -> None:
    with pytest.raises(ValueError, match=name):
        SchedulerConfig(**{name: bad})
