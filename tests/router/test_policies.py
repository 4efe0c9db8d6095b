"""Routing policies over fabricated load snapshots (no sockets)."""

from __future__ import annotations

from collections import Counter

import pytest

from splitserve.router.policies import (
    NoWorkerError,
    Pickers,
    PolicyConfig,
    RoundRobin,
    RouteRequest,
    WorkerLoad,
    alternative_prefill,
    choose,
    least_loaded,
    prefill_pool_saturated,
)


def w(url: str, role: str = "decode", healthy: bool = True, **load: int) -> WorkerLoad:
    return WorkerLoad(url, role, healthy, **load)  # type: ignore[arg-type]


LONG = RouteRequest(num_prompt_tokens=500)
SHORT = RouteRequest(num_prompt_tokens=10)


def test_least_loaded_prefers_shorter_queue_then_lower_kv_usage() -> None:
    busy = w("a", num_waiting=3, num_running=2, num_free_blocks=90, num_used_blocks=10)
    idle_full_kv = w("b", num_waiting=0, num_running=1, num_free_blocks=10, num_used_blocks=90)
    idle_empty_kv = w("c", num_waiting=0, num_running=1, num_free_blocks=90, num_used_blocks=10)
    assert least_loaded([busy, idle_full_kv, idle_empty_kv]).url == "c"
    assert least_loaded([busy, idle_full_kv]).url == "b"


def test_least_loaded_counts_router_inflight_between_polls() -> None:
    stale_idle = w("a", num_inflight=4)
    really_busier = w("b", num_running=2)
    assert least_loaded([stale_idle, really_busier]).url == "b"


def test_round_robin_cycles_evenly_over_healthy_workers() -> None:
    rr = RoundRobin()
    pool = [w("a"), w("b"), w("c")]
    counts = Counter(rr.pick(pool).url for _ in range(30))
    assert counts == {"a": 10, "b": 10, "c": 10}


def test_empty_pool_is_an_error_not_a_crash() -> None:
    with pytest.raises(ValueError):
        least_loaded([])
    with pytest.raises(ValueError):
        RoundRobin().pick([])


def test_choose_disaggregates_long_prompts() -> None:
    snap = [w("p1", "prefill", num_waiting=2), w("p2", "prefill"), w("d1")]
    route = choose(snap, LONG, PolicyConfig(short_prompt_len=64), Pickers.new())
    assert (route.kind, route.prefill_url, route.decode_url) == ("disaggregated", "p2", "d1")


def test_short_prompt_threshold_is_inclusive_and_configurable() -> None:
    snap = [w("p1", "prefill"), w("d1")]
    at = RouteRequest(num_prompt_tokens=64)
    above = RouteRequest(num_prompt_tokens=65)
    cfg = PolicyConfig(short_prompt_len=64)
    assert choose(snap, at, cfg, Pickers.new()).kind == "local_prefill_short"
    assert choose(snap, above, cfg, Pickers.new()).kind == "disaggregated"
    assert choose(snap, SHORT, PolicyConfig(short_prompt_len=0), Pickers.new()).kind == (
        "disaggregated")


def test_saturated_prefill_pool_prefills_on_decode_worker() -> None:
    cfg = PolicyConfig(saturated_num_waiting=4)
    full = [w("p1", "prefill", num_waiting=4), w("p2", "prefill", num_waiting=9), w("d1")]
    route = choose(full, LONG, cfg, Pickers.new())
    assert (route.kind, route.prefill_url, route.decode_url) == (
        "local_prefill_saturated", None, "d1")
    one_free = [w("p1", "prefill", num_waiting=4), w("p2", "prefill", num_waiting=3), w("d1")]
    assert choose(one_free, LONG, cfg, Pickers.new()).prefill_url == "p2"
    assert not prefill_pool_saturated([w("p", "prefill", num_waiting=100)], 0)


def test_unhealthy_workers_are_skipped() -> None:
    snap = [w("p1", "prefill", healthy=False), w("p2", "prefill", num_waiting=5),
            w("d1", healthy=False), w("d2", num_running=7)]
    route = choose(snap, LONG, PolicyConfig(), Pickers.new())
    assert (route.prefill_url, route.decode_url) == ("p2", "d2")


def test_no_healthy_prefill_worker_falls_back_to_local_prefill() -> None:
    snap = [w("p1", "prefill", healthy=False), w("d1")]
    assert choose(snap, LONG, PolicyConfig(), Pickers.new()).kind == "local_prefill_saturated"


def test_no_decode_capable_worker_raises_with_role() -> None:
    with pytest.raises(NoWorkerError, match="decode"):
        choose([w("p1", "prefill"), w("d1", healthy=False)], LONG, PolicyConfig(), Pickers.new())
    with pytest.raises(NoWorkerError):
        choose([], LONG, PolicyConfig(), Pickers.new())


def test_colocated_when_only_mixed_workers() -> None:
    snap = [w("m1", "mixed", num_running=3), w("m2", "mixed", num_running=1)]
    route = choose(snap, SHORT, PolicyConfig(), Pickers.new())
    assert (route.kind, route.prefill_url, route.decode_url) == ("colocated", None, "m2")


def test_round_robin_policy_spreads_decode_and_prefill() -> None:
    snap = [w("p1", "prefill"), w("p2", "prefill"), w("d1"), w("d2")]
    pickers = Pickers.new()
    routes = [choose(snap, LONG, PolicyConfig(policy="round_robin"), pickers) for _ in range(4)]
    assert Counter(r.prefill_url for r in routes) == {"p1": 2, "p2": 2}
    assert Counter(r.decode_url for r in routes) == {"d1": 2, "d2": 2}


def test_retry_prefers_another_prefill_worker() -> None:
    snap = [w("p1", "prefill"), w("p2", "prefill", num_waiting=9), w("d1")]
    assert alternative_prefill(snap, "p1", PolicyConfig(), Pickers.new()) == "p2"
    assert alternative_prefill(snap[:1] + snap[2:], "p1", PolicyConfig(), Pickers.new()) == "p1"


def test_policy_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="policy"):
        PolicyConfig(policy="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PolicyConfig(short_prompt_len=-1)
