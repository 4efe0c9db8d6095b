"""The prompt-step factor: prices steps that compute prompt tokens apart from decode steps."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner import Pool, Requests, ServingOverhead, simulate
from tests.planner.conftest import ConstantLatency


def _reqs(arrival_s: list[float], output_len: int) -> Requests:
    n = len(arrival_s)
    return Requests(arrival_s=np.array(arrival_s), input_len=np.full(n, 100),
                    output_len=np.full(n, output_len))


def test_one_request_alone_scales_only_its_prompt_step() -> None:
    # prompt step 50 ms * 1.3 = 65 ms; then 9 decode steps of 10 ms, unscaled
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    res = simulate(_reqs([0.0], 10), pools, overhead=ServingOverhead(prefill_scale=1.3))
    assert res.first_token_s[0] == pytest.approx(0.065)
    assert res.finish_s[0] == pytest.approx(0.065 + 9 * 0.01)


def test_a_step_mixing_a_prompt_with_decodes_is_a_prompt_step() -> None:
    # r0: prompt 0-0.1 s (0.05 * 2), decodes 0.1-0.11, 0.11-0.12; r1 arrives at 0.115,
    # waits for that step, then its prompt step (carrying r0's decode) takes 0.1 s:
    # first token at 0.22, and r0's remaining 96 decode steps (of 99) follow, with r1's
    # decodes in the same steps
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    over = ServingOverhead(prefill_scale=2.0, step_scale=1.0)
    res = simulate(_reqs([0.0, 0.115], 100), pools, overhead=over)
    assert res.first_token_s[0] == pytest.approx(0.1)
    assert res.first_token_s[1] == pytest.approx(0.22)
    assert res.finish_s[0] == pytest.approx(0.22 + 96 * 0.01)


def test_step_scale_and_prefill_scale_multiply() -> None:
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    over = ServingOverhead(prefill_scale=1.5, step_scale=2.0)
    res = simulate(_reqs([0.0], 3), pools, overhead=over)
    assert res.first_token_s[0] == pytest.approx(0.05 * 3.0)
    assert res.finish_s[0] == pytest.approx(0.15 + 2 * 0.02)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_bad_prefill_scale_is_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="prefill_scale"):
        ServingOverhead(prefill_scale=value)


def test_first_scheduled_is_when_the_prompt_starts_computing() -> None:
    # r1 arrives during r0's prompt step (0-0.05) and starts at its end
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    res = simulate(_reqs([0.0, 0.02], 5), pools)
    assert res.first_scheduled_s is not None
    np.testing.assert_allclose(res.first_scheduled_s, [0.0, 0.05])
    np.testing.assert_allclose(res.first_token_s - res.first_scheduled_s, [0.05, 0.05])


def test_prefill_step_s_adds_to_prompt_steps_only_after_the_factor() -> None:
    # prompt step 50 ms * 1.2 + 8 ms = 68 ms; the 4 decode steps stay 10 ms
    pools = [Pool("mixed", 1, ConstantLatency(0.05, 0.01))]
    over = ServingOverhead(prefill_scale=1.2, prefill_step_s=0.008)
    res = simulate(_reqs([0.0], 5), pools, overhead=over)
    assert res.first_token_s[0] == pytest.approx(0.068)
    assert res.finish_s[0] == pytest.approx(0.068 + 4 * 0.01)


@pytest.mark.parametrize("value", [-0.001, float("nan")])
def test_bad_prefill_step_s_is_rejected(value: float) -> None:
    with pytest.raises(ValueError, match="prefill_step_s"):
        ServingOverhead(prefill_step_s=value)
