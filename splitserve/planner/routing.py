"""How the simulated router picks an instance for an arriving or prefilled request.

Mixed (colocated) pools have three policies, named by `ROUTINGS`:

- "tokens": fewest queued prompt tokens + KV tokens in use (an ideal least-loaded router);
- "requests": fewest requests waiting or running, then least KV in use;
- "polled": splitserve's router as it runs. It sees each worker's load as last polled
  (every `poll_interval_s` from `poll_offset_s` on) and its own count of the requests it
  sent there that have not finished; it picks the fewest of max(polled, own), then the
  least polled KV in use. Between polls a burst can pile onto one worker.

A disaggregated fleet sends a prompt to the prefill instance with the fewest queued
prompt tokens (or, under conditional disaggregation, to the least-loaded decode
instance), and a prefilled request to the decode instance with the fewest sequences
running, arriving or waiting for KV space. Conditional disaggregation has the router's two
rules: a prompt of at most `local_prefill_max_len` tokens, and any prompt while every
prefill instance has at least `saturated_num_waiting` requests waiting (what its engine
reports: taken in between steps and not yet admitted; as last polled under "polled", else
live), are prefilled on the decode instance
(`splitserve.router.policies`: `local_prefill_short`, `local_prefill_saturated`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from splitserve.planner.fleet import Instance

ROUTINGS = ("tokens", "requests", "polled")


class Router:
    """The routing state of one simulation: the policy and, for "polled", the last poll.

    The simulation calls `poll` at every poll time (from `poll_offset_s`, every
    `poll_interval_s`) and the `pick_*` methods at every routing decision.
    """

    def __init__(self, routing: str, poll_interval_s: float, poll_offset_s: float,
                 num_instances: int, input_len: Sequence[int],
                 arrival: Sequence[float] = (), admitted: Sequence[bool] = ()) -> None:
        """`arrival`, `admitted`: the simulation's per-request arrays (read live), for
        `num_waiting`."""
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if not math.isfinite(poll_interval_s) or poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be a finite number > 0, got "
                             f"{poll_interval_s}")
        if not 0 <= poll_offset_s < math.inf:
            raise ValueError(f"poll_offset_s must be a finite number >= 0, got {poll_offset_s}")
        self.routing = routing
        self.poll_interval_s = poll_interval_s
        self.poll_offset_s = poll_offset_s
        self.input_len = input_len
        self.arrival = arrival
        self.admitted = admitted
        # (requests, KV tokens in use) per instance at the last poll; before the first
        # poll the router knows nothing (zeros)
        self.polled: list[tuple[int, int]] = [(0, 0)] * num_instances
        self.polled_waiting: list[int] = [0] * num_instances

    def pick_mixed(self, pool: Sequence[Instance]) -> Instance:
        if self.routing == "requests":
            return min(pool, key=lambda x: (self.num_requests(x), x.kv_used))
        if self.routing == "polled":
            polled = self.polled
            return min(pool, key=lambda x: (
                max(polled[x.idx][0], self.num_requests(x)), polled[x.idx][1]))
        return min(pool, key=lambda x: x.queued_prefill_tokens + x.kv_used)

    @staticmethod
    def pick_prefill(pool: Sequence[Instance]) -> Instance:
        return min(pool, key=lambda x: x.queued_prefill_tokens)

    @staticmethod
    def pick_decode(pool: Sequence[Instance]) -> Instance:
        return min(pool, key=Instance.decode_load)

    def num_requests(self, inst: Instance) -> int:
        """Requests queued or running on `inst`, counting one whose last prompt chunk is
        in the current step (it has left `waiting` and not yet joined `running`): the
        engine counts it running, the router in flight."""
        input_len = self.input_len
        in_step = sum(1 for rid, take, cached in inst.chunks if cached + take >= input_len[rid])
        return len(inst.waiting) + inst.num_running + in_step

    def num_waiting(self, inst: Instance) -> int:
        """Requests queued on `inst` that its engine took in and has not admitted (what a
        worker reports as `num_waiting`): a worker hands new requests to its engine between
        steps, so those that arrived during the current step are not in yet; a cut prompt
        at the queue head was admitted."""
        waiting, arrival = inst.waiting, self.arrival
        n = len(waiting) - (1 if waiting and self.admitted[waiting[0]] else 0)
        if inst.busy:
            for rid in reversed(waiting):
                if arrival[rid] <= inst.step_started_s:
                    break
                n -= 1
        return max(n, 0)

    def prefill_saturated(self, pool: Sequence[Instance], num_waiting: int) -> bool:
        """Every prefill instance has at least `num_waiting` requests waiting (the
        router's `prefill_pool_saturated`), as last polled under "polled"."""
        if self.routing == "polled":
            return all(self.polled_waiting[x.idx] >= num_waiting for x in pool)
        return all(self.num_waiting(x) >= num_waiting for x in pool)

    def poll(self, pool: Sequence[Instance]) -> None:
        for inst in pool:
            self.polled[inst.idx] = (self.num_requests(inst), inst.kv_used)
            if inst.role == "prefill":
                self.polled_waiting[inst.idx] = self.num_waiting(inst)
