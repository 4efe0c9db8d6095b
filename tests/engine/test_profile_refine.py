"""The bisection policy `splitserve profile` refines its axes with: pure logic, driven by
latency functions with a known shape (a kernel-switch step, a straight line, noise)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitserve.engine.profile_refine import AxisRefiner, chord_deviation
from splitserve.planner import ProfileLatencyModel
from splitserve.planner.profile_format import make_profile

POWERS = [1, 2, 4, 8, 16, 32, 64]
COLUMNS = (0, 1024, 4096)  # KV tokens of a decode step


def step_cost(jump_after: int, jump_s: float = 0.006) -> Callable[[int, int], float]:
    """Decode step seconds: linear in batch and context, plus a jump above `jump_after`
    (the shape measured on this machine: 18.1 ms at batch 16, 23.8 ms at 17)."""
    def cost(batch: int, context: int) -> float:
        return 0.013 + 0.0003 * batch + 1e-6 * context + (jump_s if batch > jump_after else 0)
    return cost


def refine(cost: Callable[[int, int], float], axis: list[int], *, tol: float = 0.05,
           max_points: int = 32) -> tuple[AxisRefiner, int]:
    """Run the profiler's loop with `cost` standing in for the measurement; returns the
    refiner and how many rounds it asked for."""
    refiner = AxisRefiner(axis, tol=tol, max_points=max_points)
    measured = {b: [cost(b, c) for c in COLUMNS] for b in axis}
    num_rounds = 0
    while points := refiner.next_points(measured):
        num_rounds += 1
        assert num_rounds <= 64, "refinement must terminate"
        assert not set(points) & set(measured), "a point is never measured twice"
        measured.update({b: [cost(b, c) for c in COLUMNS] for b in points})
    assert sorted(measured) == refiner.axis
    return refiner, num_rounds


def test_a_step_between_16_and_17_is_located_to_that_pair() -> None:
    refiner, _ = refine(step_cost(16), POWERS)
    assert 17 in refiner.axis  # 16 and 17 now adjacent: nothing between them to misprice
    assert len(refiner.added) <= 32
    # the flat halves settle: far fewer points than measuring every batch in 16..32
    assert len(refiner.added) < 15


def test_refined_axis_prices_batch_17_right_where_the_grid_did_not() -> None:
    cost = step_cost(16)
    refiner, _ = refine(cost, POWERS)

    def model(axis: list[int]) -> ProfileLatencyModel:
        decode = [[cost(b, c) for c in COLUMNS] for b in axis]
        return ProfileLatencyModel(make_profile(
            model_name="m", hardware_name="h", tensor_parallel=1, kv_capacity_tokens=4096,
            kv_bytes_per_token=1, num_layers=1, prefill=([1, 2], [0, 1], [[1.0, 1.0]] * 2),
            decode=(axis, list(COLUMNS), decode)))

    truth = cost(17, 1024)
    coarse = model(POWERS).decode_s(17, 1024)
    assert coarse < truth * 0.8  # linear between 16 and 32: priced far too cheap
    for batch in range(1, 65):
        # every batch is priced within tolerance on the refined axis
        assert model(refiner.axis).decode_s(batch, 1024) == pytest.approx(
            cost(batch, 1024), rel=0.05)


@settings(max_examples=60, deadline=None)
@given(jump_after=st.integers(1, 63), jump_s=st.floats(0.005, 0.05))
def test_a_step_anywhere_is_found_by_bisection(jump_after: int, jump_s: float) -> None:
    refiner, _ = refine(step_cost(jump_after, jump_s), POWERS)
    i = refiner.axis.index(jump_after)
    assert refiner.axis[i + 1] == jump_after + 1


def test_a_linear_cost_needs_only_the_first_midpoints() -> None:
    refiner, num_rounds = refine(lambda b, c: 0.01 + 0.0004 * b + 2e-6 * c, POWERS)
    assert refiner.added == [3, 6, 12, 24, 48]  # (1, 2) has no midpoint
    assert num_rounds == 1
    assert all(dev < 1e-9 for dev in refiner.deviation.values())


def test_noise_below_tolerance_does_not_refine() -> None:
    rng = random.Random(0)

    def noisy(b: int, c: int) -> float:
        return (0.01 + 0.0004 * b + 2e-6 * c) * (1 + rng.uniform(-0.015, 0.015))

    refiner, num_rounds = refine(noisy, POWERS, tol=0.05)
    assert refiner.added == [3, 6, 12, 24, 48]
    assert num_rounds == 1


def test_the_cap_on_added_points_is_respected() -> None:
    refiner, _ = refine(step_cost(16), POWERS, max_points=3)
    assert len(refiner.added) == 3
    refiner, _ = refine(step_cost(16), POWERS, max_points=0)
    assert refiner.added == []


def test_when_capped_the_larger_jump_is_chased_first() -> None:
    big, small = step_cost(40, 0.02), step_cost(16, 0.008)

    def cost(b: int, c: int) -> float:
        return big(b, c) + small(b, c) - small(0, 0)

    # round 1 measures 3, 6, 12, 24, 48; both (16, 32) and (32, 64) deviate, and the 2
    # points left go to the halves of the later interval, which deviated more
    refiner, _ = refine(cost, POWERS, max_points=7)
    assert refiner.added[:5] == [3, 6, 12, 24, 48]
    assert sorted(refiner.added[5:]) == [40, 56]
    # uncapped, both jumps are located
    refiner, _ = refine(cost, POWERS)
    assert {17, 41} <= set(refiner.axis)


def test_tol_zero_turns_refinement_off() -> None:
    refiner, num_rounds = refine(step_cost(16), POWERS, tol=0.0)
    assert refiner.added == []
    assert num_rounds == 0
    assert refiner.axis == POWERS


def test_unmeasured_midpoint_is_an_error() -> None:
    refiner = AxisRefiner([1, 4], tol=0.05, max_points=4)
    assert refiner.next_points({1: [1.0], 4: [2.0]}) == [2]
    with pytest.raises(ValueError, match=r"no latencies measured at \[2\]"):
        refiner.next_points({1: [1.0], 4: [2.0]})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"axis": [1, 4, 4], "tol": 0.05, "max_points": 1}, "strictly increasing"),
    ({"axis": [1, 4], "tol": 1.0, "max_points": 1}, r"tol must be in \[0, 1\)"),
    ({"axis": [1, 4], "tol": -0.1, "max_points": 1}, r"tol must be in \[0, 1\)"),
    ({"axis": [1, 4], "tol": float("nan"), "max_points": 1}, r"tol must be in \[0, 1\)"),
    ({"axis": [1, 4], "tol": 0.05, "max_points": -1}, "max_points must be >= 0"),
])
def test_bad_refiner_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AxisRefiner(kwargs.pop("axis"), **kwargs)


def test_chord_deviation_is_relative_to_the_chord_at_the_worst_column() -> None:
    # column 0 on the line; column 1: chord at 3 (of 2..4) is 3.0, measured 3.3 -> 10%
    assert chord_deviation(2, 3, 4, [1.0, 2.0], [1.5, 3.3], [2.0, 4.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="strictly between"):
        chord_deviation(2, 2, 4, [1.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="equal length"):
        chord_deviation(2, 3, 4, [1.0], [1.0, 2.0], [1.0])


def test_policy_imports_without_torch() -> None:
    code = ("import sys, splitserve.engine.profile_refine, splitserve.engine.profile_grid; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
