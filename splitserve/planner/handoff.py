"""The simulator's prefill -> decode KV handoff: picking the decode instance, admitting
transfers when its KV and batch have room, queueing them on its link, and landing them.

Functions of a `Simulation` (bound as its methods), kept here to keep simulator.py small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from splitserve.planner.fleet import Instance

if TYPE_CHECKING:
    from splitserve.planner.simulator import Simulation

TRANSFER_DONE = 1  # the simulator's event kind for a transfer landing


def hand_off(self: Simulation, rid: int, now: float) -> None:
    dec = self.router.pick_decode(self.by_role["decode"])
    if self.input_len[rid] + self.output_len[rid] > dec.kv_capacity:
        src = self.instances[self.home[rid]]  # never fits on a decode instance:
        src.kv_used -= self.reserved[rid]  # unfinished, its prompt's KV freed
        if not src.busy and src.waiting:
            self._start_step(src, now)
        return
    dec.pending.append(rid)
    self._admit_pending(dec, now)

def admit_pending(self: Simulation, dec: Instance, now: float) -> None:
    assert self.transfer is not None
    cfg = self.transfer
    while dec.pending:
        rid = dec.pending[0]
        need = self.input_len[rid] + self.output_len[rid]
        active = dec.num_running + dec.num_incoming + len(dec.ready)
        if dec.kv_used + need > dec.kv_capacity or active >= self.sched.max_num_seqs:
            return
        dec.pending.popleft()
        dec.kv_used += need
        self.reserved[rid] = need
        dec.num_incoming += 1
        src = self.instances[self.home[rid]]
        # computing: prompts waiting, or a step still in flight (at the step's own end,
        # where a handoff is first offered, `busy` has not been cleared yet)
        source_busy = bool(src.waiting) or (src.busy and src.step_started_s + src.step_s > now)
        full_s = cfg.duration_s(self.input_len[rid], dec.model, src.step_s, source_busy)
        start = max(now, dec.link_free_s)
        dec.link_free_s = start + full_s
        latency_s = cfg.latency_s + (cfg.busy_source_extra_latency_s if source_busy else 0.0)
        self._push(start + full_s + latency_s, TRANSFER_DONE, dec.idx, rid)

def transfer_done(self: Simulation, dec: Instance, rid: int, now: float) -> None:
    dec.num_incoming -= 1
    dec.ready.append(rid)
    src = self.instances[self.home[rid]]
    src.kv_used -= self.input_len[rid]
    if not src.busy and src.waiting:
        self._start_step(src, now)
    if not dec.busy:
        self._start_step(dec, now)
