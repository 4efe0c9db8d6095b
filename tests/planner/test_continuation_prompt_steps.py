"""`SchedulerConfig.continuation_prompt_scale`: steps that only continue prompts begun
earlier (a long prompt's later chunks) are priced apart from steps that start a prompt."""

from __future__ import annotations

import numpy as np
import pytest

from splitserve.planner import Pool, Requests, SchedulerConfig, simulate
from tests.planner.conftest import ConstantLatency


def _ttft(arrival: list[float], input_len: int, scale: float) -> np.ndarray:
    requests = Requests(arrival_s=np.array(arrival), input_len=np.full(len(arrival), input_len),
                        output_len=np.ones(len(arrival), dtype=np.int64))
    sched = SchedulerConfig(token_budget=100, continuation_prompt_scale=scale)
    return simulate(requests, [Pool("mixed", 1, ConstantLatency(1.0, 0.01))], sched).ttft_s


def test_a_long_prompts_later_chunks_run_at_the_continuation_price() -> None:
    # 300 tokens, 100 per step: the first chunk at full price, the two after it halved
    assert _ttft([0.0], 300, 0.5)[0] == pytest.approx(1.0 + 2 * 0.5)
    assert _ttft([0.0], 300, 1.0)[0] == pytest.approx(3.0)


def test_prompts_queued_back_to_back_each_pay_the_full_price() -> None:
    # r1 arrives during r0's step and runs right after it: a new prompt, full price
    ttft = _ttft([0.0, 0.5], 100, 0.5)
    assert ttft == pytest.approx([1.0, 1.5])


def test_a_step_that_also_starts_a_prompt_pays_the_full_price() -> None:
    # budget 100: r0 (150 tokens) takes 100, then 50 beside r1's first 50 -> full price
    ttft = _ttft([0.0, 0.0], 150, 0.5)
    assert ttft[0] == pytest.approx(2.0)


def test_bad_continuation_scale_is_rejected() -> None:
    with pytest.raises(ValueError, match="continuation_prompt_scale"):
        SchedulerConfig(continuation_prompt_scale=0.0)
