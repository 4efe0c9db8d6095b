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
is settled, else both halves (a, m) and (m, b) become candidates. A step anywhere in
(a, b) puts the midpoint on one side of it, off the chord by up to half the jump, so
bisection follows the step down to the adjacent pair around it. At most `max_points`
points are added per axis; when candidates outnumber what is left, the ones whose parent
deviated most go first (the coarse intervals, with nothing known yet, before any).

Pure logic over plain numbers: no torch, no timing. The profiler's loop is
`while points := refiner.next_points(latency_by_value): measure(points)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Interval = tuple[int, int]


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
        self.deviation: dict[Interval, float] = {}  # judged interval -> its chord deviation
        # candidate interval -> priority (the parent's deviation; inf for coarse intervals)
        self._candidates: dict[Interval, float] = {}
        self._pending: list[Interval] = []  # intervals whose midpoint is being measured
        if tol > 0:
            self._candidates = {(a, b): math.inf
                                for a, b in zip(values, values[1:], strict=False) if b - a > 1}

    @property
    def done(self) -> bool:
        return not self._pending and (not self._candidates or self.num_left == 0)

    @property
    def num_left(self) -> int:
        return self.max_points - len(self.added)

    def next_points(self, latency_by_value: Mapping[int, Sequence[float]]) -> list[int]:
        """Judge the last batch of midpoints, then return the next ones (sorted; [] = done)."""
        for a, b in self._pending:
            m = (a + b) // 2
            missing = [v for v in (a, m, b) if v not in latency_by_value]
            if missing:
                raise ValueError(f"no latencies measured at {missing} (axis {self.axis})")
            dev = chord_deviation(a, m, b, latency_by_value[a], latency_by_value[m],
                                  latency_by_value[b])
            self.deviation[(a, b)] = dev
            if dev > self.tol:
                for half in ((a, m), (m, b)):
                    if half[1] - half[0] > 1:
                        self._candidates[half] = dev
        self._pending = []
        if self.num_left <= 0:
            self._candidates.clear()
            return []
        ranked = sorted(self._candidates, key=lambda ab: (-self._candidates[ab], ab))
        self._pending = sorted(ranked[:self.num_left])
        for interval in self._pending:
            del self._candidates[interval]
        points = [(a + b) // 2 for a, b in self._pending]
        self.added.extend(points)
        self.axis = sorted(self.axis + points)
        return points
