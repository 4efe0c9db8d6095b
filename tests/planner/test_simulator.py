from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner.cost_model import RooflineLatencyModel
from splitserve.planner.fleet import Pool, SchedulerConfig, TransferConfig
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.results import Slo
from splitserve.planner.simulator import Simulation, simulate
from splitserve.planner.workload import Requests, fixed_workload, generate

from .conftest import ConstantLatency


def _one(input_len: int, output_len: int, at_s: float = 1.0) -> Requests:
    return Requests(np.array([at_s]), np.array([input_len]), np.array([output_len]))


@pytest.fixture(scope="module")
def roofline() -> RooflineLatencyModel:
    return RooflineLatencyModel(load_model_spec("opt-13b"), get_hardware("a100"), 1)


def test_single_request_colocated_equals_formula(roofline: RooflineLatencyModel) -> None:
    input_len, output_len = 700, 50
    res = simulate(_one(input_len, output_len), [Pool("mixed", 1, roofline)])
    ttft = roofline.prefill_s(input_len)
    # Decode step j holds the prompt, the first token and j - 1 generated tokens.
    decode = sum(roofline.decode_s(1, input_len + j) for j in range(1, output_len))
    assert res.ttft_s[0] == pytest.approx(ttft, rel=1e-12)
    assert res.e2e_s[0] == pytest.approx(ttft + decode, rel=1e-12)
    assert res.tpot_s[0] == pytest.approx(decode / (output_len - 1), rel=1e-12)


def test_single_request_disaggregated_adds_the_transfer(roofline: RooflineLatencyModel) -> None:
    input_len, output_len = 700, 50
    link = TransferConfig(link_bw_bytes_s=25e9, latency_s=1e-4)
    res = simulate(
        _one(input_len, output_len),
        [Pool("prefill", 1, roofline), Pool("decode", 1, roofline)],
        transfer=link,
    )
    transfer = input_len * roofline.kv_bytes_per_token / 25e9 + 1e-4
    decode = sum(roofline.decode_s(1, input_len + j) for j in range(1, output_len))
    assert res.ttft_s[0] == pytest.approx(roofline.prefill_s(input_len), rel=1e-12)
    assert res.e2e_s[0] == pytest.approx(
        roofline.prefill_s(input_len) + transfer + decode, rel=1e-12
    )


def test_chunked_prefill_runs_a_long_prompt_in_budget_sized_steps(
    roofline: RooflineLatencyModel,
) -> None:
    sched = SchedulerConfig(token_budget=512)
    res = simulate(_one(1200, 1), [Pool("mixed", 1, roofline)], sched)
    expect = roofline.prefill_s(512) + roofline.prefill_s(512, 512) + roofline.prefill_s(176, 1024)
    assert res.ttft_s[0] == pytest.approx(expect, rel=1e-12)


def test_prefill_queue_matches_md1_mean_wait() -> None:
    rate, service_s = 6.0, 0.1  # utilisation 0.6
    num = 100_000
    rng = np.random.default_rng(7)
    requests = Requests(
        np.cumsum(rng.exponential(1 / rate, num)),
        np.full(num, 100, dtype=np.int64),
        np.ones(num, dtype=np.int64),
    )
    # One prompt per step (budget = prompt length): no batching, fixed service time.
    sched = SchedulerConfig(token_budget=100)
    res = simulate(requests, [Pool("mixed", 1, ConstantLatency(service_s))], sched)
    rho = rate * service_s
    expect = service_s + rate * service_s**2 / (2 * (1 - rho))
    assert float(np.mean(res.ttft_s)) == pytest.approx(expect, rel=0.05)


def test_every_request_finishes_or_is_reported_unfinished() -> None:
    reqs = generate(fixed_workload(300, 20), rate=50.0, num_requests=400, seed=3)
    too_long = Requests(
        np.append(reqs.arrival_s, reqs.arrival_s[-1] + 0.01),
        np.append(reqs.input_len, 5000),
        np.append(reqs.output_len, 10),
    )
    model = ConstantLatency(0.02, 0.01, kv_capacity_tokens=3000)
    for pools in (
        [Pool("mixed", 2, model)],
        [Pool("prefill", 1, model), Pool("decode", 2, model)],
    ):
        sim = Simulation(too_long, pools, transfer=TransferConfig(1e9))
        res = sim.run()
        assert res.num_unfinished == 1 and np.isnan(res.finish_s[-1])
        assert np.all(res.finished[:-1])
        assert all(i.kv_used == 0 and i.num_running == 0 for i in sim.instances)
        assert np.all(res.e2e_s[:-1] >= res.ttft_s[:-1])


def test_early_stop_reports_the_rest_unfinished() -> None:
    reqs = generate(fixed_workload(300, 20), rate=100.0, num_requests=1000, seed=3)
    slo = Slo(0.05, 0.05)
    res = simulate(reqs, [Pool("mixed", 1, ConstantLatency(0.05))], stop_after_misses=(slo, 10))
    full = simulate(reqs, [Pool("mixed", 1, ConstantLatency(0.05))])
    assert res.num_unfinished > 0 and full.num_unfinished == 0
    assert res.attainment(slo) < 0.9 and full.attainment(slo) < 0.9


def test_conditional_disaggregation_prefills_short_prompts_on_decode() -> None:
    reqs = Requests(
        np.array([0.0, 0.5, 1.0, 1.5]), np.array([50, 5000, 80, 6000]), np.array([5, 5, 5, 5])
    )
    model = ConstantLatency(0.01)
    res = simulate(
        reqs,
        [Pool("prefill", 1, model), Pool("decode", 1, model)],
        transfer=TransferConfig(1e9),
        local_prefill_max_len=100,
    )
    assert res.num_local_prefills == 2 and res.num_unfinished == 0


def test_prefix_cache_hits_shorten_the_prefill(roofline: RooflineLatencyModel) -> None:
    reqs = Requests(
        np.array([0.0, 10.0]),
        np.array([1024, 1100]),
        np.array([1, 1]),
        hash_ids=((1, 2), (1, 2, 3)),
    )
    res = simulate(reqs, [Pool("mixed", 1, roofline)], SchedulerConfig(token_budget=4096))
    assert res.num_prefix_hit_tokens == 1024
    assert res.ttft_s[1] == pytest.approx(roofline.prefill_s(76, 1024), rel=1e-12)


def test_least_loaded_routing_spreads_a_burst() -> None:
    reqs = Requests(np.zeros(4), np.full(4, 100), np.full(4, 1))
    res = simulate(
        reqs, [Pool("mixed", 4, ConstantLatency(0.1))], SchedulerConfig(token_budget=100)
    )
    assert np.allclose(res.ttft_s, 0.1)


def test_fleet_needs_mixed_or_both_pools() -> None:
    reqs = _one(10, 2)
    model = ConstantLatency(0.01)
    with pytest.raises(ValueError, match="need one mixed pool"):
        simulate(reqs, [Pool("prefill", 1, model)], transfer=TransferConfig(1e9))
    with pytest.raises(ValueError, match="needs a TransferConfig"):
        simulate(reqs, [Pool("prefill", 1, model), Pool("decode", 1, model)])


def test_a_request_joining_with_transferred_kv_slows_that_decode_step() -> None:
    # A prefills in [0, 0.1] and decodes alone until B (prefilled by 0.203) joins; each
    # join lengthens that decode step by join_s, for every sequence in it
    reqs = Requests(np.array([0.0, 0.103]), np.array([100, 100]), np.array([30, 10]))
    pools = [Pool("prefill", 1, ConstantLatency(0.1)), Pool("decode", 1, ConstantLatency(0.1))]
    plain = simulate(reqs, pools, transfer=TransferConfig(1e15))
    joined = simulate(reqs, pools, transfer=TransferConfig(1e15, join_s=0.005))
    assert plain.e2e_s[0] == pytest.approx(0.1 + 29 * 0.01)
    # A's own join step, then B's
    assert joined.e2e_s[0] == pytest.approx(plain.e2e_s[0] + 2 * 0.005)
    assert joined.ttft_s == pytest.approx(plain.ttft_s)


def test_join_cost_must_be_a_finite_non_negative_number() -> None:
    for bad in (-0.001, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="join_s"):
            TransferConfig(1e9, join_s=bad)


class _PerToken(ConstantLatency):
    """1 ms per prompt token, 10 ms per decode step."""

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        if num_prefill_tokens:
            return 0.001 * num_prefill_tokens
        return 0.01 if num_decode_seqs else 0.0


def test_a_prefill_instance_that_chunks_fills_each_step_to_its_budget() -> None:
    # two 80-token prompts queue behind a 40-token one (0 - 0.04 s), budget 100: whole
    # prompts run one per step; cut to the budget (as splitserve's engine does), A's step
    # also takes 20 of B's tokens
    reqs = Requests(np.array([0.0, 0.01, 0.01]), np.array([40, 80, 80]), np.array([2, 2, 2]))
    pools = [Pool("prefill", 1, _PerToken(0.0)), Pool("decode", 1, _PerToken(0.0))]
    link = TransferConfig(1e15)
    whole = simulate(reqs, pools, SchedulerConfig(prefill_token_budget=100), link)
    cut = simulate(reqs, pools, SchedulerConfig(prefill_token_budget=100,
                                                prefill_role_chunks=True), link)
    assert whole.ttft_s == pytest.approx([0.04, 0.11, 0.19])
    assert cut.ttft_s == pytest.approx([0.04, 0.13, 0.19])


def test_a_transfer_out_of_a_computing_prefill_instance_takes_the_busy_link() -> None:
    # A and B (1 MB of KV each) arrive together; A's KV goes out while B's prompt is still
    # to compute (busy source: 1 MB / 10 MB/s + 10 ms + 20 ms extra), B's after the
    # prefill instance ran out of work (1 MB / 100 MB/s + 10 ms), queued behind A's on
    # the decode instance's link until 0.2 s
    reqs = Requests(np.array([0.0, 0.0]), np.array([1000, 1000]), np.array([2, 2]))
    pools = [Pool("prefill", 1, ConstantLatency(0.1)), Pool("decode", 1, ConstantLatency(0.1))]
    busy = TransferConfig(1e8, latency_s=0.01, busy_source_bw_bytes_s=1e7,
                          busy_source_extra_latency_s=0.02)
    res = simulate(reqs, pools, transfer=busy)
    assert res.ttft_s == pytest.approx([0.1, 0.2])
    # B lands at 0.22 and decodes first; A lands at 0.23 and decodes after it
    assert res.e2e_s == pytest.approx([0.1 + 0.1 + 0.01 + 0.02 + 0.01, 0.2 + 0.01 + 0.01 + 0.01])
    plain = simulate(reqs, pools, transfer=TransferConfig(1e8, latency_s=0.01))
    assert plain.e2e_s == pytest.approx([0.1 + 0.01 + 0.01 + 0.01, 0.2 + 0.01 + 0.01 + 0.01])


def test_the_busy_source_link_must_be_a_positive_rate() -> None:
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="busy_source_bw_bytes_s"):
            TransferConfig(1e9, busy_source_bw_bytes_s=bad)
    with pytest.raises(ValueError, match="busy_source_extra_latency_s"):
        TransferConfig(1e9, busy_source_extra_latency_s=-0.1)
