"""Choose the training thread count by timing steps, because the fastest one depends on load.

On an idle two-core machine two threads train about twice as fast as one. On a busy one
each step waits at every parallel region for a thread the OS has descheduled: measured
here under a load average of 9 on 2 cores, 2 threads took 9.4 s a step and 1 thread 2.1 s.
So a time-bounded build tries each candidate for a few steps, keeps the fastest, and tries
again every `recheck_s`, since other processes come and go.
"""

from __future__ import annotations

from collections import Counter


class ThreadTuner:
    """Per-step thread-count choice from measured step times (pure; no torch here).

    Call `threads_for_next_step()` before each step, apply it, run the step, then
    `record(step_s)`. Phases: one untimed warm-up step, then `probe_steps` timed steps per
    candidate, then the fastest candidate until `recheck_s` of steps have passed, then a
    new probe round.
    """

    def __init__(self, max_threads: int, probe_steps: int = 2, recheck_s: float = 60.0) -> None:
        if max_threads <= 0 or probe_steps <= 0 or recheck_s <= 0:
            raise ValueError(
                f"max_threads, probe_steps and recheck_s must be positive, got "
                f"{max_threads}, {probe_steps}, {recheck_s}"
            )
        self.candidates = sorted({max_threads, 1}, reverse=True)
        self.probe_steps = probe_steps
        self.recheck_s = recheck_s
        self.steps_by_threads: Counter[int] = Counter()
        self._best = self.candidates[0]
        self._warmed_up = False
        self._probe_times: dict[int, list[float]] = {}
        self._probing = len(self.candidates) > 1
        self._since_probe_s = 0.0
        self._current = self.candidates[0]

    def threads_for_next_step(self) -> int:
        if self._warmed_up and self._probing:
            for threads in self.candidates:
                if len(self._probe_times.get(threads, [])) < self.probe_steps:
                    self._current = threads
                    return threads
        self._current = self._best
        return self._best

    def record(self, step_s: float) -> None:
        """Account the step just run with the count the last call returned."""
        self.steps_by_threads[self._current] += 1
        if not self._warmed_up:
            self._warmed_up = True  # the first step pays for allocation and lazy init
            return
        if self._probing:
            self._probe_times.setdefault(self._current, []).append(step_s)
            if all(len(self._probe_times.get(t, [])) >= self.probe_steps for t in self.candidates):
                self._best = min(self.candidates, key=lambda t: sum(self._probe_times[t]))
                self._probing = False
                self._since_probe_s = 0.0
            return
        self._since_probe_s += step_s
        if len(self.candidates) > 1 and self._since_probe_s >= self.recheck_s:
            self._probing = True
            self._probe_times = {}

    @property
    def most_used_threads(self) -> int:
        return self.steps_by_threads.most_common(1)[0][0] if self.steps_by_threads else self._best
