"""The bisection policy `splitserve profile` refines its axes with: pure logic, driven by
latency functions with a known shape (a kernel-switch step, a straight line, noise, a
burst of load on one measurement)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitserve.engine.profile_refine import AxisRefiner, chord_deviation, min_merged
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


def line(b: int, c: int) -> float:
    return 0.01 + 0.0004 * b + 2e-6 * c


def refine(cost: Callable[[int, int], float], axis: list[int], *, tol: float = 0.05,
           max_points: int = 32, latency: dict[tuple[int, int], float] | None = None,
           ) -> tuple[AxisRefiner, int]:
    """Run the profiler's loop with `cost` standing in for the measurement (called once
    per cell and measurement, so it may be noisy) and `min_merged` keeping the smaller
    latency of a re-measured cell; returns the refiner and how many rounds it asked for,
    and fills `latency` with the final table ((batch, column) -> seconds)."""
    refiner = AxisRefiner(axis, tol=tol, max_points=max_points)
    table = {} if latency is None else latency
    num_measured: Counter[int] = Counter()

    def measure(points: list[int]) -> None:
        num_measured.update(points)
        table.update(min_merged(table, {(b, c): cost(b, c) for b in points for c in COLUMNS}))

    def rows() -> dict[int, list[float]]:
        return {b: [table[(b, c)] for c in COLUMNS] for b in sorted(num_measured)}

    measure(axis)
    num_rounds = 0
    while points := refiner.next_points(rows()):
        num_rounds += 1
        assert num_rounds <= 64, "refinement must terminate"
        # a point is measured again only where the refiner says so, and only once
        assert [b for b in points if b in num_measured] == refiner.remeasuring
        measure(points)
        assert max(num_measured.values()) <= 2
    assert refiner.done
    assert sorted(num_measured) == refiner.axis
    assert sorted(b for b, n in num_measured.items() if n == 2) == sorted(refiner.remeasured)
    assert set(refiner.remeasured) <= set(refiner.added)  # grid points are never re-measured
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
    refiner, num_rounds = refine(line, POWERS)
    assert refiner.added == [3, 6, 12, 24, 48]  # (1, 2) has no midpoint
    assert refiner.remeasured == []
    assert num_rounds == 1
    assert all(dev < 1e-9 for dev in refiner.deviation.values())


def test_noise_below_tolerance_does_not_refine() -> None:
    rng = random.Random(0)

    def noisy(b: int, c: int) -> float:
        return line(b, c) * (1 + rng.uniform(-0.015, 0.015))

    refiner, num_rounds = refine(noisy, POWERS, tol=0.05)
    assert refiner.added == [3, 6, 12, 24, 48]
    assert num_rounds == 1


def bursts(cost: Callable[[int, int], float], burst_by_batch: dict[int, float],
           num_bursts: int = 1) -> Callable[[int, int], float]:
    """`cost`, with the first `num_bursts` measurements of each batch in `burst_by_batch`
    (at every column) slowed by that fraction: a burst of load on a shared machine."""
    seen: Counter[tuple[int, int]] = Counter()

    def measured(b: int, c: int) -> float:
        seen[(b, c)] += 1
        slow = burst_by_batch.get(b, 0.0) if seen[(b, c)] <= num_bursts else 0.0
        return cost(b, c) * (1 + slow)
    return measured


def test_an_outlier_midpoint_is_remeasured_once_and_not_split() -> None:
    # batch 24 measured 20% slow once (the profiler's batch 19 at 30.3 ms between ~25 ms
    # neighbours): measured again on the line, (16, 32) is straight after all
    latency: dict[tuple[int, int], float] = {}
    refiner, num_rounds = refine(bursts(line, {24: 0.2}), POWERS, latency=latency)
    assert refiner.remeasured == [24]
    assert refiner.added == [3, 6, 12, 24, 48]  # no point spent on the straight interval
    assert num_rounds == 2
    assert refiner.deviation[(16, 32)] == pytest.approx(0.0, abs=1e-9)
    # the table keeps the second, on-the-line measurement: the outlier is gone
    assert [latency[(24, c)] for c in COLUMNS] == pytest.approx([line(24, c) for c in COLUMNS])


def test_an_outlier_measured_twice_is_still_split() -> None:
    # both measurements slow: indistinguishable from a spike in the cost, so it is
    # followed down to its neighbours 23 and 25 (`refine` checks that no point is
    # measured a third time)
    refiner, _ = refine(bursts(line, {24: 0.2}, num_bursts=2), POWERS)
    assert refiner.remeasured[0] == 24
    assert {20, 28, 23, 25} <= set(refiner.added)


@settings(max_examples=40, deadline=None)
@given(burst_by_batch=st.dictionaries(st.sampled_from([3, 6, 12, 24, 48]),
                                      st.floats(0.06, 0.6), max_size=5))
def test_bursts_on_a_straight_line_cost_no_added_points(burst_by_batch: dict[int, float],
                                                        ) -> None:
    refiner, _ = refine(bursts(line, burst_by_batch), POWERS)
    assert refiner.added == [3, 6, 12, 24, 48]
    assert sorted(refiner.remeasured) == sorted(burst_by_batch)


def test_a_real_step_is_confirmed_at_every_level_and_followed_to_16_17() -> None:
    # the re-measurement of each off-chord midpoint is slow too (noise only adds time):
    # the minimum is the first measurement, still off the chord, so bisection goes on
    refiner, _ = refine(bursts(step_cost(16), {b: 0.01 for b in range(65)}, num_bursts=99),
                        POWERS)
    assert refiner.remeasured == [24, 20, 18, 17]  # each off-chord midpoint, level by level
    assert refiner.added == [3, 6, 12, 24, 48, 20, 28, 18, 22, 17, 19]
    i = refiner.axis.index(16)
    assert refiner.axis[i + 1] == 17


def test_remeasurements_do_not_count_against_the_cap() -> None:
    # the cap is spent by the first 5 midpoints; the outlier at 24 is still measured again
    # (no point added), so the table does not keep it
    latency: dict[tuple[int, int], float] = {}
    refiner, num_rounds = refine(bursts(line, {24: 0.2}), POWERS, max_points=5,
                                 latency=latency)
    assert refiner.added == [3, 6, 12, 24, 48]
    assert refiner.remeasured == [24]
    assert num_rounds == 2
    assert latency[(24, 0)] == pytest.approx(line(24, 0))
    # a real step is re-measured too, but the spent cap adds nothing below it
    refiner, _ = refine(step_cost(16), POWERS, max_points=5)
    assert refiner.remeasured == [24]
    assert refiner.added == [3, 6, 12, 24, 48]


def test_min_merged_keeps_the_smaller_latency_of_a_remeasured_cell() -> None:
    old = {("decode", 19, 0): 0.0303, ("decode", 19, 64): 0.0418, ("decode", 16, 0): 0.025}
    new = {("decode", 19, 0): 0.0251, ("decode", 19, 64): 0.0420, ("decode", 20, 0): 0.026}
    before = dict(old)
    assert min_merged(old, new) == {
        ("decode", 19, 0): 0.0251,  # the burst at the first measurement is dropped
        ("decode", 19, 64): 0.0418,  # elementwise: the first was the faster here
        ("decode", 20, 0): 0.026}  # measured once: kept as is
    assert old == before  # pure: the caller merges with old.update(...)


def test_next_points_says_which_points_are_remeasured() -> None:
    refiner = AxisRefiner([1, 9], tol=0.05, max_points=4)
    assert refiner.next_points({1: [1.0], 9: [2.0]}) == [5]
    assert refiner.remeasuring == []
    assert refiner.next_points({1: [1.0], 9: [2.0], 5: [3.0]}) == [5]  # off the chord
    assert refiner.remeasuring == [5] and refiner.added == [5]
    assert not refiner.done
    # still off the chord after the re-measurement: both halves, nothing re-measured
    assert refiner.next_points({1: [1.0], 9: [2.0], 5: [2.9]}) == [3, 7]
    assert refiner.remeasuring == []


def test_the_cap_on_added_points_is_respected() -> None:
    refiner, _ = refine(step_cost(16), POWERS, max_points=3)
    assert len(refiner.added) == 3
    refiner, _ = refine(step_cost(16), POWERS, max_points=0)
    assert refiner.added == []


def test_when_capped_the_larger_jump_is_chased_first() -> None:
    big, small = step_cost(40, 0.02), step_cost(16, 0.008)

    def cost(b: int, c: int) -> float:
        return big(b, c) + small(b, c) - small(0, 0)

    # round 1 measures 3, 6, 12, 24, 48; both (16, 32) and (32, 64) deviate (again when
    # round 2 re-measures 24 and 48), and the 2 points left go to the halves of the later
    # interval, which deviated more
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
