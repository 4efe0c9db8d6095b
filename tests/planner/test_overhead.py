"""Serving-overhead terms: hand-checkable single requests and a two-request batch."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner import (
    OverheadLatencyModel,
    Pool,
    Requests,
    ServingOverhead,
    Slo,
    TransferConfig,
    simulate,
)
from splitserve.planner.simulator import Simulation
from tests.planner.conftest import ConstantLatency


def _reqs(arrival_s: list[float], input_len: int, output_len: int) -> Requests:
    n = len(arrival_s)
    return Requests(arrival_s=np.array(arrival_s), input_len=np.full(n, input_len),
                    output_len=np.full(n, output_len))


def test_defaults_change_nothing() -> None:
    reqs = _reqs([0.0, 0.01, 0.5], 100, 20)
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    bare = simulate(reqs, pools)
    zero = simulate(reqs, pools, overhead=ServingOverhead())
    np.testing.assert_array_equal(bare.first_token_s, zero.first_token_s)
    np.testing.assert_array_equal(bare.finish_s, zero.finish_s)


def test_one_request_alone_pays_each_term_once_per_step() -> None:
    # prefill step 50 ms + 2 ms; each of the 9 decode steps 10 ms + 2 ms + 1 ms (1 seq);
    # the client sees every token 30 ms later
    over = ServingOverhead(step_s=0.002, per_seq_s=0.001, delivery_s=0.03)
    res = simulate(_reqs([0.0], 100, 10), [Pool("mixed", 1, ConstantLatency(0.05, 0.01))],
                   overhead=over)
    assert res.ttft_s[0] == pytest.approx(0.05 + 0.002 + 0.03)
    assert res.tpot_s[0] == pytest.approx(0.01 + 0.002 + 0.001)
    assert res.e2e_s[0] == pytest.approx(0.082 + 9 * 0.013)


def test_per_seq_term_grows_with_the_decode_batch() -> None:
    # r0 prefills alone (0 -> 50 ms); step 2 prefills r1 beside r0's first decode
    # (50 + 4 ms per decode seq); then both decode (10 + 2 * 4 ms) until r0 is done after
    # 3 more steps, and r1 finishes alone (10 + 4 ms)
    base = ConstantLatency(0.05, 0.01)
    res = simulate(_reqs([0.0, 0.0], 10, 5), [Pool("mixed", 1, base)],
                   overhead=ServingOverhead(per_seq_s=0.004))
    np.testing.assert_allclose(res.first_token_s, [0.05, 0.104])
    np.testing.assert_allclose(res.finish_s, [0.104 + 3 * 0.018, 0.104 + 3 * 0.018 + 0.014])


def test_disaggregated_overhead_on_both_pools_plus_transfer() -> None:
    base = ConstantLatency(0.05, 0.01)
    link = TransferConfig(link_bw_bytes_s=1e6, latency_s=0.005)  # 100 tok * 1000 B = 0.1 s
    over = ServingOverhead(step_s=0.002, delivery_s=0.01)
    res = simulate(_reqs([0.0], 100, 3), [Pool("prefill", 1, base), Pool("decode", 1, base)],
                   transfer=link, overhead=over)
    assert res.ttft_s[0] == pytest.approx(0.052 + 0.01)
    # first token at 0.052, transfer 0.105, then 2 decode steps of 12 ms
    assert res.e2e_s[0] == pytest.approx(0.052 + 0.105 + 2 * 0.012 + 0.01)


def test_step_scale_multiplies_the_profiled_step_before_the_fixed_terms() -> None:
    over = ServingOverhead(step_scale=1.5, step_s=0.002, per_seq_s=0.001)
    res = simulate(_reqs([0.0], 100, 3), [Pool("mixed", 1, ConstantLatency(0.04, 0.01))],
                   overhead=over)
    assert res.ttft_s[0] == pytest.approx(0.06 + 0.002)
    assert res.tpot_s[0] == pytest.approx(0.015 + 0.002 + 0.001)


def test_wrapper_keeps_the_base_models_facts_and_empty_steps() -> None:
    base = ConstantLatency(0.05, 0.01, kv_capacity_tokens=1234, tensor_parallel=2)
    model = OverheadLatencyModel(base, ServingOverhead(step_s=0.5, per_seq_s=0.25))
    assert (model.kv_capacity_tokens, model.tensor_parallel) == (1234, 2)
    assert model.step_s(0, 0.0, 0, 0, 0) == 0.0
    assert model.step_s(0, 0.0, 0, 2, 100) == pytest.approx(0.01 + 0.5 + 0.5)
    assert model.step_s(64, 10.0, 64, 0, 0) == pytest.approx(0.05 + 0.5)


def test_early_stop_counts_the_delivery_delay() -> None:
    # engine TTFT 50 ms meets a 70 ms SLO, but 30 ms delivery makes every request miss
    reqs = _reqs([0.0, 1.0, 2.0, 3.0], 100, 2)
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    res = simulate(reqs, pools, stop_after_misses=(Slo(0.07, 1.0), 0),
                   overhead=ServingOverhead(delivery_s=0.03))
    assert res.num_unfinished >= 2


@pytest.mark.parametrize("field", ["step_s", "per_seq_s", "delivery_s", "step_scale",
                                   "prefill_jitter_cv"])
@pytest.mark.parametrize("value", [-0.001, float("nan"), float("inf")])
def test_bad_overheads_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ServingOverhead(**{field: value})


def test_prefill_jitter_keeps_the_mean_is_seeded_and_spares_decode_steps() -> None:
    base = ConstantLatency(0.05, 0.01)
    over = ServingOverhead(prefill_jitter_cv=0.5, jitter_seed=7)
    a = OverheadLatencyModel(base, over)
    b = OverheadLatencyModel(base, over)
    draws = np.array([a.step_s(64, 10.0, 64, 0, 0) for _ in range(20_000)])
    assert np.mean(draws) == pytest.approx(0.05, rel=0.02)
    assert np.std(draws) / np.mean(draws) == pytest.approx(0.5, rel=0.1)
    assert [b.step_s(64, 10.0, 64, 0, 0) for _ in range(5)] == list(draws[:5])
    assert a.step_s(0, 0.0, 0, 1, 10) == pytest.approx(0.01)  # decode steps stay exact
    assert a.step_s(0, 0.0, 0, 0, 0) == 0.0  # no work, no step


def test_zero_step_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="step_scale"):
        ServingOverhead(step_scale=0.0)


def test_request_count_routing_ignores_prompt_length() -> None:
    # r0 (1000-token prompt) goes to instance 0, r1 and r2 (10 tokens) to instance 1.
    # For r3, instance 0 holds 1 request but ~2000 tokens, instance 1 holds 2 requests
    # but ~200 tokens: "tokens" picks instance 1, "requests" (the router's) instance 0.
    reqs = Requests(arrival_s=np.array([0.0, 0.0, 0.0, 0.001]),
                    input_len=np.array([1000, 10, 10, 10]), output_len=np.full(4, 100))
    pools = [Pool("mixed", 2, ConstantLatency(0.5, 0.01))]
    homes = {}
    for routing in ("tokens", "requests"):
        sim = Simulation(reqs, pools, routing=routing)
        sim.run()
        homes[routing] = sim.home
    assert homes["tokens"] == [0, 1, 1, 1]
    assert homes["requests"] == [0, 1, 1, 0]


def test_unknown_routing_is_rejected() -> None:
    with pytest.raises(ValueError, match="routing"):
        simulate(_reqs([0.0], 10, 2), [Pool("mixed", 1, ConstantLatency(0.05))],
                 routing="random")


def test_round_trips_through_a_dict_and_rejects_unknown_fields() -> None:
    over = ServingOverhead(step_s=0.001, per_seq_s=0.0002, delivery_s=0.02, step_scale=1.2,
                           prefill_jitter_cv=0.3, jitter_seed=3)
    assert ServingOverhead.from_dict(over.to_dict()) == over
    with pytest.raises(ValueError, match="unknown"):
        ServingOverhead.from_dict({"step": 1.0})
