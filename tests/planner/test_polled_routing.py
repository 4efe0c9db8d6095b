"""The router's view of load as it runs: polled every interval, plus its own in-flight count."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner import Pool, Requests, simulate
from splitserve.planner.simulator import Simulation
from tests.planner.conftest import ConstantLatency


def _stale_case() -> Requests:
    # Prefill steps 0.1 s, decode steps 0.01 s, two mixed instances, polls at 0, 0.5, 1.0
    # (the first sees nothing). r0 (t=0.05) -> instance 0; r1 (t=0.06, long) -> instance
    # 1; r2 (t=0.07, counts 1:1, polled KV 0:0) -> instance 0. r0 runs 0.15-0.74 s, r2
    # 0.25-0.75 s, r1 to ~10 s. The 0.5 s poll sees 2 requests on instance 0, 1 on 1.
    # r3 (t=0.855): instance 0 is empty now, instance 1 holds r1. A router going by live
    # counts picks instance 0; the real router still sees max(2 polled, 0 own) = 2
    # against max(1, 1) = 1 and picks instance 1.
    # r4 (t=1.1): the 1.0 s poll saw 0 against 1 (r3 is done): instance 0.
    return Requests(arrival_s=np.array([0.05, 0.06, 0.07, 0.855, 1.1]),
                    input_len=np.full(5, 10),
                    output_len=np.array([51, 1000, 51, 5, 5]))


def _homes(routing: str, poll_interval_s: float = 0.5) -> list[int]:
    pools = [Pool("mixed", 2, ConstantLatency(0.1, 0.01))]
    sim = Simulation(_stale_case(), pools, routing=routing, poll_interval_s=poll_interval_s)
    sim.run()
    return sim.home


def test_stale_poll_sends_a_request_to_the_busier_instance() -> None:
    assert _homes("requests") == [0, 1, 0, 0, 0]
    assert _homes("polled") == [0, 1, 0, 1, 0]


def test_polls_fast_enough_route_like_live_counts() -> None:
    # polled every 10 ms the router's view is never more than one decode step old
    assert _homes("polled", poll_interval_s=0.01) == _homes("requests")


def test_polled_routing_finishes_every_request() -> None:
    pools = [Pool("mixed", 2, ConstantLatency(0.1, 0.01))]
    res = simulate(_stale_case(), pools, routing="polled")
    assert res.finished.all()
    # r3 waited on instance 1 for r1's decode step to end (at 0.86 s), then one prefill
    # step: 0.005 + 0.1 s; on idle instance 0 it would have taken 0.1 s
    ttft_r3 = res.first_token_s[3] - 0.855
    assert ttft_r3 == pytest.approx(0.105, abs=1e-6)


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_bad_poll_interval_is_rejected(interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval_s"):
        simulate(_stale_case(), [Pool("mixed", 2, ConstantLatency(0.1))], routing="polled",
                 poll_interval_s=interval)
