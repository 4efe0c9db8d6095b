"""The router's overflow rule in the simulator: while every prefill instance has
`saturated_num_waiting` requests waiting, a new prompt is prefilled on a decode instance
(splitserve/router/policies.py, `local_prefill_saturated`)."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner import Pool, Requests, SchedulerConfig, TransferConfig, simulate
from splitserve.planner.simulator import Simulation
from tests.planner.conftest import ConstantLatency


def _bursts() -> Requests:
    # Burst A: 5 prompts at t=0.1; burst B: 3 at t=0.6. A prefill step takes 1 s and holds
    # one prompt (budget = prompt length), so at 0.6 s prompt 0 is in its step and 1-4 wait.
    return Requests(arrival_s=np.array([0.1] * 5 + [0.6] * 3), input_len=np.full(8, 100),
                    output_len=np.full(8, 4))


def _run(routing: str, saturated_num_waiting: int) -> Simulation:
    pools = [Pool("prefill", 1, ConstantLatency(1.0, 0.01)),
             Pool("decode", 1, ConstantLatency(1.0, 0.01))]
    sched = SchedulerConfig(prefill_token_budget=100)
    sim = Simulation(_bursts(), pools, sched, TransferConfig(1e9), routing=routing,
                     poll_interval_s=0.5, saturated_num_waiting=saturated_num_waiting)
    sim.run()
    return sim


def test_live_counts_overflow_once_three_wait() -> None:
    # burst A: prompt 0 starts at once, 1-3 wait, 4 finds 3 waiting -> decode instance;
    # burst B finds 1-3 still waiting: all three go local
    sim = _run("requests", 3)
    assert sim.home == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sim.num_local == 4


def test_the_polled_router_overflows_only_after_a_poll_saw_the_queue() -> None:
    # polls at 0.0 (nothing yet) and 0.5 (4 waiting: 1-4): burst A all goes to the prefill
    # instance, burst B overflows
    sim = _run("polled", 3)
    assert sim.home == [0, 0, 0, 0, 0, 1, 1, 1]
    assert sim.num_local == 3


def test_without_the_rule_every_prompt_waits_for_the_prefill_instance() -> None:
    sim = _run("requests", 0)
    assert sim.home == [0] * 8 and sim.num_local == 0


def test_overflowed_requests_finish_sooner_and_nothing_is_lost() -> None:
    base, overflow = (simulate(_bursts(), [Pool("prefill", 1, ConstantLatency(1.0, 0.01)),
                                           Pool("decode", 1, ConstantLatency(1.0, 0.01))],
                               SchedulerConfig(prefill_token_budget=100), TransferConfig(1e9),
                               routing="requests", saturated_num_waiting=n) for n in (0, 3))
    assert base.finished.all() and overflow.finished.all()
    assert np.nanmax(overflow.ttft_s) < np.nanmax(base.ttft_s)


def test_negative_threshold_is_rejected() -> None:
    with pytest.raises(ValueError, match="saturated_num_waiting"):
        _run("requests", -1)


def test_prompts_arriving_during_a_step_count_once_the_engine_took_them_in() -> None:
    # a worker hands new requests to its engine between steps: r1-r4 arrive during r0's
    # step (0.0-1.0 s) and are not waiting yet, so r4 still goes to the prefill instance;
    # from 1.0 s (r1's step) r2-r4 wait, and r5 (1.1 s) overflows
    requests = Requests(arrival_s=np.array([0.0, 0.2, 0.2, 0.2, 0.3, 1.1]),
                        input_len=np.full(6, 100), output_len=np.full(6, 4))
    pools = [Pool("prefill", 1, ConstantLatency(1.0, 0.01)),
             Pool("decode", 1, ConstantLatency(1.0, 0.01))]
    sim = Simulation(requests, pools, SchedulerConfig(prefill_token_budget=100),
                     TransferConfig(1e9), routing="requests", saturated_num_waiting=3)
    sim.run()
    assert sim.home == [0, 0, 0, 0, 0, 1]


def test_the_result_names_which_requests_prefilled_on_the_decode_instance() -> None:
    pools = [Pool("prefill", 1, ConstantLatency(1.0, 0.01)),
             Pool("decode", 1, ConstantLatency(1.0, 0.01))]
    requests = Requests(arrival_s=np.array([0.1] * 5 + [0.6] * 3),
                        input_len=np.array([100] * 7 + [8]), output_len=np.full(8, 4))
    result = simulate(requests, pools, SchedulerConfig(prefill_token_budget=100),
                      TransferConfig(1e9), routing="requests", saturated_num_waiting=3,
                      local_prefill_max_len=16)
    # prompt 4 overflowed, 5-6 too (the queue still full at 0.6 s), 7 is short
    assert result.local_prefill.tolist() == [False] * 4 + [True] * 4
    assert int(result.local_prefill.sum()) == result.num_local_prefills
