"""Where `splitserve profile` measures beyond its power-of-two axes: bisection refinement.

The planner interpolates step latency linearly between the points of a profile's axes. A
step cost that jumps between two points is then priced wrong over the whole interval: on
this machine's CPU the 110M bfloat16 model's decode step took 18.1 ms at batch 16 but
23.8 ms at batch 17 (a matmul kernel switch), so interpolating between 16 and 32 priced a
batch of 17 about 30% too cheap. GPUs jump the same way (CUDA-graph padding to captured
batch sizes, tile and wave quantization).

The policy, for one axis: every adjacent pair (a, b) with b - a > 1 is a candidate; its
midpoint m = (a + b) // 2 is measured (at every column of the other axis). If at every
column the measured m lies within `tol` (relative) of the chord from a to b, the interval
is settled. Else m is measured once more first, and the latency kept for m is the
elementwise minimum of the two (`min_merged`): timing noise on a shared machine only adds
time, so a burst of load on one measurement (batch 19 at 30.3 ms between neighbours at
about 25 ms, on this machine) is dropped, while a real step shows up again. Only if m
still deviates do both halves (a, m) and (m, b) become candidates. A step anywhere in
(a, b) puts the midpoint on one side of it, off the chord by up to half the jump, so
bisection follows the step down to the adjacent pair around it. At most `max_points`
points are added per axis; when candidates outnumber what is left, the ones whose parent
deviated most go first (the coarse intervals, with nothing known yet, before any).
Re-measurements do not count against `max_points` (they add no point), but each added
point is re-measured at most once, so they are bounded by the points added; a midpoint
that deviates after the cap is spent is still re-measured, so its table entry is the
minimum too. New points and re-measurements come in alternate calls (a point is measured
in one call's batch, re-measured in the next one's, its halves asked for in the one
after), so when the cap binds no split waits on another interval's re-measurement and
the largest deviation still goes first.

Pure logic over plain numbers: no torch, no timing. The profiler's loop is
`while points := refiner.next_points(latency_by_value): measure(points)`, where a point
measured before (listed in `refiner.remeasuring`) keeps `min_merged` latencies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

Interval = tuple[int, int]
K = TypeVar("K")


def min_merged(latency: Mapping[K, float], measured: Mapping[K, float]) -> dict[K, float]:
    """`measured`'s entries, each replaced by the smaller of it and `latency`'s entry for
    the same key where there is one: the latency of a re-measured cell is the minimum of
    its two medians (noise on a shared machine only adds time). Merge with
    `latency.update(min_merged(latency, measured))`."""
    return {key: min(value, latency[key]) if key in latency else value
            for key, value in measured.items()}


def chord_deviation(a: int, m: int, b: int, lat_a: Sequence[float], lat_m: Sequence[float],
                    lat_b: Sequence[float]) -> float:
    """Largest relative distance, over the columns, of the latency measured at `m` from the
    linear interpolation between `a` and `b` at `m` (relative to the interpolation)."""
    if not a < m < b:
        raise ValueError(f"midpoint {m} must lie strictly between {a} and {b}")
    if not len(lat_a) == len(lat_m) == len(lat_b) or not lat_a:
        raise ValueError(f"latency lists at {a}, {m}, {b} must be non-empty and of equal "
                         f"length, got {len(lat_a)}, {len(lat_m)}, {len(lat_b)}")
    u = (m - a) / (b - a)
    worst = 0.0
    for ya, ym, yb in zip(lat_a, lat_m, lat_b, strict=True):
        chord = ya + (yb - ya) * u
        if chord <= 0:
            raise ValueError(f"latencies must be positive, got {ya} at {a} and {yb} at {b}")
        worst = max(worst, abs(ym - chord) / chord)
    return worst


class AxisRefiner:
    """Bisection state of one axis (see the module docstring for the policy).

    Call order: `next_points(latency_by_value)` with the latencies of every value measured
    so far (coarse axis first, then also each returned point); it returns the points to
    measure next, or [] when done. Each call first judges the points the previous call
    returned, so all of them must be in `latency_by_value` by then (ValueError if not).
    A returned point may have been measured before: `remeasuring` lists those of the last
    call, and the caller keeps the elementwise minimum of old and new latencies for them
    (`min_merged`) before the next call.
    """

    def __init__(self, axis: Sequence[int], *, tol: float, max_points: int) -> None:
        values = list(axis)
        if any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ValueError(f"axis must be strictly increasing, got {values}")
        if not 0 <= tol < 1:
            raise ValueError(f"tol must be in [0, 1), got {tol}")
        if max_points < 0:
            raise ValueError(f"max_points must be >= 0, got {max_points}")
        self.tol = tol
        self.max_points = max_points
        self.axis: list[int] = values  # coarse and added points, sorted
        self.added: list[int] = []  # in the order they were asked for
        self.remeasured: list[int] = []  # added points asked for a second time, in order
        self.remeasuring: list[int] = []  # the re-measured points of the last call
        # judged interval -> its chord deviation (after the re-measurement, if one was made)
        self.deviation: dict[Interval, float] = {}
        # candidate interval -> priority (the parent's deviation; inf for coarse intervals)
        self._candidates: dict[Interval, float] = {}
        self._pending: list[Interval] = []  # intervals whose midpoint is measured a 1st time
        self._confirming: list[Interval] = []  # ... and those whose midpoint is re-measured
        if tol > 0:
            self._candidates = {(a, b): math.inf
                                for a, b in zip(values, values[1:], strict=False) if b - a > 1}

    @property
    def done(self) -> bool:
        return (not self._pending and not self._confirming
                and (not self._candidates or self.num_left == 0))

    @property
    def num_left(self) -> int:
        return self.max_points - len(self.added)

    def _judge(self, interval: Interval, latency_by_value: Mapping[int, Sequence[float]],
               ) -> float:
        a, b = interval
        m = (a + b) // 2
        missing = [v for v in (a, m, b) if v not in latency_by_value]
        if missing:
            raise ValueError(f"no latencies measured at {missing} (axis {self.axis})")
        dev = chord_deviation(a, m, b, latency_by_value[a], latency_by_value[m],
                              latency_by_value[b])
        self.deviation[interval] = dev
        return dev

    def next_points(self, latency_by_value: Mapping[int, Sequence[float]]) -> list[int]:
        """Judge the last batch of points, then return the next ones (sorted; [] = done):
        new midpoints, and midpoints off the chord at their first measurement, to be
        measured once more (also listed in `remeasuring`)."""
        for interval in self._confirming:
            dev = self._judge(interval, latency_by_value)
            if dev > self.tol:
                a, b = interval
                m = (a + b) // 2
                for half in ((a, m), (m, b)):
                    if half[1] - half[0] > 1:
                        self._candidates[half] = dev
        self._confirming = [interval for interval in self._pending
                            if self._judge(interval, latency_by_value) > self.tol]
        self.remeasuring = [(a + b) // 2 for a, b in self._confirming]
        self.remeasured.extend(self.remeasuring)
        self._pending = []
        if self.num_left <= 0:
            self._candidates.clear()
            return sorted(self.remeasuring)
        ranked = sorted(self._candidates, key=lambda ab: (-self._candidates[ab], ab))
        self._pending = sorted(ranked[:self.num_left])
        for interval in self._pending:
            del self._candidates[interval]
        points = [(a + b) // 2 for a, b in self._pending]
        self.added.extend(points)
        self.axis = sorted(self.axis + points)
        return sorted(points + self.remeasuring)
