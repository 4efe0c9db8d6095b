"""A simulation whose instances share their cores with the serving front end.

Split out of simulator.py (it subclasses `Simulation`); `simulate` picks it when
`SchedulerConfig.host` is set.
"""

from __future__ import annotations

from typing import Any

from splitserve.planner.fleet import Instance
from splitserve.planner.host_share import StretchedModel, TokenRate
from splitserve.planner.simulator import Simulation


class HostSimulation(Simulation):
    """A `Simulation` whose instances share their cores with the serving front end
    (`SchedulerConfig.host`): every step stretched by the front end's share at the
    output-token rate when it starts (`HostShare.stretch`). A subclass, so that a fleet
    without it (every planner search) pays nothing per step."""

    prices_host = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert self.sched.host is not None
        self.token_rate = TokenRate(self.sched.host)
        for inst in self.instances:
            inst.model = StretchedModel(inst.model, self.token_rate)

    def _start_step(self, inst: Instance, now: float) -> None:
        self.token_rate.now_s = now
        super()._start_step(inst, now)

    def _end_step(self, inst: Instance, now: float) -> None:
        # the step's tokens: one per decoding sequence, one per prompt it completes
        done = sum(1 for rid, take, _ in inst.chunks
                   if self.done_tokens[rid] + take >= self.input_len[rid])
        self.token_rate.add(now, (inst.num_running if inst.has_decode else 0) + done)
        super()._end_step(inst, now)
