"""The front end sharing the instances' cores (`HostShare`), hand-checked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from splitserve.planner import HostShare
from splitserve.planner.fleet import Pool, SchedulerConfig, TransferConfig
from splitserve.planner.host_share import MAX_SHARE, TokenRate
from splitserve.planner.simulator import simulate
from splitserve.planner.workload import Requests

from .conftest import ConstantLatency


def test_stretch_is_one_over_the_share_of_a_core_left() -> None:
    host = HostShare(cpu_per_token_s=0.001, num_cores=2)
    assert host.stretch(0.0) == 1.0
    # 400 tokens/s x 1 ms over 2 cores: a fifth of each core goes to the front end
    assert host.stretch(400.0) == pytest.approx(1 / 0.8)
    # never the whole core
    assert host.stretch(1e9) == pytest.approx(1 / (1 - MAX_SHARE))


@pytest.mark.parametrize("kwargs, match", [
    ({"cpu_per_token_s": -0.001, "num_cores": 1}, "cpu_per_token_s"),
    ({"cpu_per_token_s": math.inf, "num_cores": 1}, "cpu_per_token_s"),
    ({"cpu_per_token_s": math.nan, "num_cores": 1}, "cpu_per_token_s"),
    ({"cpu_per_token_s": 0.001, "num_cores": 0}, "num_cores"),
    ({"cpu_per_token_s": 0.001, "num_cores": 1, "window_s": 0.0}, "window_s"),
])
def test_bad_host_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HostShare(**kwargs)  # type: ignore[arg-type]


def test_token_rate_follows_a_steady_stream_and_decays_after_it() -> None:
    rate = TokenRate(HostShare(0.001, 1, window_s=0.5))
    for k in range(1, 1001):  # 4 tokens every 10 ms for 10 s: 400 tokens/s
        rate.add(k * 0.01, 4)
    # the average just after a step's tokens sits above the mean by about half a step's
    assert rate.at(10.0) == pytest.approx(400.0, rel=0.02)
    assert rate.at(10.5) == pytest.approx(rate.at(10.0) * math.exp(-1.0))


def _one(input_len: int, output_len: int, at_s: float = 0.0) -> Requests:
    return Requests(np.array([at_s]), np.array([input_len]), np.array([output_len]))


def test_a_lone_stream_pays_the_front_ends_cpu_per_token() -> None:
    # each decode step of one sequence emits one token: at a step of s seconds the front
    # end takes c / s of the one core, so s (1 - c / s) = d, s = d + c
    d, c = 0.010, 0.002
    host = HostShare(cpu_per_token_s=c, num_cores=1)
    pools = [Pool("mixed", 1, ConstantLatency(0.1, d))]
    plain = simulate(_one(100, 2000), pools)
    shared = simulate(_one(100, 2000), pools, SchedulerConfig(host=host))
    assert plain.tpot_s[0] == pytest.approx(d)
    assert shared.tpot_s[0] == pytest.approx(d + c, rel=0.01)
    # no tokens flowed yet when the prompt ran
    assert shared.ttft_s[0] == pytest.approx(plain.ttft_s[0])


def test_a_prefill_instance_slows_while_another_instance_streams() -> None:
    # A decodes alone on the decode instance for seconds; B's prompt runs on the prefill
    # instance meanwhile and takes longer by the front end's share of the tokens A streams
    d, c = 0.010, 0.002
    reqs = Requests(np.array([0.0, 5.0]), np.array([100, 100]), np.array([3000, 2]))
    pools = [Pool("prefill", 1, ConstantLatency(0.1, d)),
             Pool("decode", 1, ConstantLatency(0.1, d))]
    link = TransferConfig(1e15)
    host = HostShare(cpu_per_token_s=c, num_cores=2)
    plain = simulate(reqs, pools, transfer=link)
    shared = simulate(reqs, pools, SchedulerConfig(host=host), link)
    assert plain.ttft_s[1] == pytest.approx(0.1)
    # A streams at 1 / s tokens/s with s = d / (1 - c / (2 s)), i.e. s = d + c / 2
    stream = 1 / (d + c / 2)
    assert shared.ttft_s[1] == pytest.approx(0.1 * host.stretch(stream), rel=0.01)
    assert shared.tpot_s[0] == pytest.approx(d + c / 2, rel=0.01)


def test_a_plain_simulation_refuses_a_host_it_would_ignore() -> None:
    from splitserve.planner.simulator import Simulation

    pools = [Pool("mixed", 1, ConstantLatency(0.1))]
    with pytest.raises(ValueError, match="HostSimulation"):
        Simulation(_one(10, 2), pools, SchedulerConfig(host=HostShare(0.001, 1)))
