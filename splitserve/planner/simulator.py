"""Discrete-event simulation of a colocated or a disaggregated fleet, step by step.

Events are instance steps ending and KV transfers landing; arrivals are merged in from the
sorted request arrays. An instance step batches every running decode (one token each) with
prompt chunks from its FIFO queue up to the token budget; its duration comes from the
latency model. A sequence finishing in step k is known in advance (it joined at step j and
needs output_len - 1 decode steps), so a step costs O(1) plus the requests it starts or
ends, never O(batch): that is what makes 100k requests take seconds.

Disaggregated flow: arrival -> least-loaded prefill instance (or, for prompts up to
`local_prefill_max_len`, the least-loaded decode instance: conditional disaggregation) ->
first token -> least-loaded decode instance queues it -> when KV space is free there the
transfer starts (queued on that instance's link) -> on arrival it joins the decode batch and
the prefill instance frees the prompt's KV. Routing policies live in
`splitserve.planner.routing`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from splitserve.planner import handoff
from splitserve.planner.batching import pack_prompts
from splitserve.planner.fleet import (
    Instance,
    Pool,
    SchedulerConfig,
    TransferConfig,
    make_instances,
)
from splitserve.planner.overhead import ServingOverhead, delayed, with_overhead
from splitserve.planner.results import SimResult, Slo
from splitserve.planner.routing import ROUTINGS, Router
from splitserve.planner.step_stats import StepTally
from splitserve.planner.workload import Requests

__all__ = ["ROUTINGS", "Simulation", "simulate"]

_STEP_END = 0
_TRANSFER_DONE = handoff.TRANSFER_DONE
_POLL = 2


class Simulation:
    """One run; construct, call `run()` once."""

    # whether this class prices `SchedulerConfig.host` (`HostSimulation` does)
    prices_host = False

    def __init__(
        self, requests: Requests, pools: Sequence[Pool], scheduler: SchedulerConfig | None = None,
        transfer: TransferConfig | None = None, local_prefill_max_len: int = 0,
        prefix_cache: bool = True, stop_after_misses: tuple[Slo, int] | None = None,
        routing: str = "tokens", poll_interval_s: float = 0.5, poll_offset_s: float = 0.0,
        saturated_num_waiting: int = 0,
    ) -> None:
        """stop_after_misses=(slo, k): end the run early once k + 1 requests missed the
        SLO (the search only needs to know the target is out of reach); the requests not
        yet finished are then reported unfinished. routing: how an arrival picks a mixed
        instance, one of `ROUTINGS` ("polled" with `poll_interval_s` and `poll_offset_s`);
        see `splitserve.planner.routing`. saturated_num_waiting > 0: a prompt arriving
        while every prefill instance has that many requests waiting is prefilled on a
        decode instance (the router's `local_prefill_saturated`; 0: never)."""
        if saturated_num_waiting < 0:
            raise ValueError(f"saturated_num_waiting must be >= 0, got {saturated_num_waiting}")
        if transfer is None and any(p.role == "prefill" for p in pools):
            raise ValueError("a disaggregated fleet needs a TransferConfig")
        self.req = requests
        self.sched = scheduler or SchedulerConfig()
        if self.sched.host is not None and not self.prices_host:
            raise ValueError("SchedulerConfig.host needs HostSimulation "
                             "(host_simulation.py; simulate() picks it)")
        self.transfer = transfer
        self.local_max_len = local_prefill_max_len
        use_prefix = prefix_cache and requests.hash_ids is not None
        self.instances, self.by_role = make_instances(pools, requests.block_tokens, use_prefix)
        n = len(requests)
        self.input_len: list[int] = requests.input_len.tolist()
        self.output_len: list[int] = requests.output_len.tolist()
        self.done_tokens = [0] * n
        self.reserved = [0] * n
        self.admitted = [False] * n
        self.home = [-1] * n  # instance that prefilled the request
        self.first_s = [math.nan] * n
        self.first_sched_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.num_hit_tokens = 0
        self.num_steps = 0
        self.tally = StepTally([inst.role for inst in self.instances])
        # before each step, outside its duration: fixed + per decoding sequence
        self.gap_s, self.gap_seq_s = self.sched.step_gap_s, self.sched.step_gap_per_seq_s
        self.slo = stop_after_misses[0] if stop_after_misses else None
        self.miss_budget = stop_after_misses[1] if stop_after_misses else len(requests)
        self.missed = [False] * n
        self.local_prefill = [False] * n
        self.num_missed = 0
        self.arrival: list[float] = requests.arrival_s.tolist()
        self.router = Router(routing, poll_interval_s, poll_offset_s, len(self.instances),
                             self.input_len, self.arrival, self.admitted)
        self.saturated_num_waiting = (saturated_num_waiting if "prefill" in self.by_role
                                      else 0)
        if routing == "polled" and ("mixed" in self.by_role or self.saturated_num_waiting) and n:
            self._push(poll_offset_s, _POLL, 0)

    @property
    def num_local(self) -> int:
        """Requests prefilled on a decode instance so far (short or overflowed)."""
        return sum(self.local_prefill)

    # -- event plumbing ---------------------------------------------------------------
    def _push(self, time_s: float, kind: int, a: int, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (time_s, self.seq, kind, a, b))

    def run(self) -> SimResult:
        arrivals = self.arrival
        n, i = len(arrivals), 0
        events = self.events
        while (i < n or events) and self.num_missed <= self.miss_budget:
            if i < n and (not events or arrivals[i] <= events[0][0]):
                self._arrive(i, arrivals[i])
                i += 1
                continue
            time_s, _, kind, a, b = heapq.heappop(events)
            if kind == _STEP_END:
                self._end_step(self.instances[a], time_s)
            elif kind == _POLL:
                self._poll(time_s, i < n)
            else:
                self._transfer_done(self.instances[a], b, time_s)
        return SimResult(
            arrival_s=self.req.arrival_s, output_len=self.req.output_len,
            first_token_s=np.asarray(self.first_s), finish_s=np.asarray(self.finish_s),
            num_local_prefills=self.num_local, num_prefix_hit_tokens=self.num_hit_tokens,
            num_steps=self.num_steps, first_scheduled_s=np.asarray(self.first_sched_s),
            steps=self.tally, local_prefill=np.asarray(self.local_prefill, dtype=bool),
        )

    # -- routing ------------------------------------------------------------------------
    def _arrive(self, rid: int, now: float) -> None:
        input_len = self.input_len[rid]
        if "mixed" in self.by_role:
            inst = self.router.pick_mixed(self.by_role["mixed"])
        elif input_len <= self.local_max_len or (
                self.saturated_num_waiting and self.router.prefill_saturated(
                    self.by_role["prefill"], self.saturated_num_waiting)):
            inst = self.router.pick_decode(self.by_role["decode"])
            self.local_prefill[rid] = True
        else:
            inst = self.router.pick_prefill(self.by_role["prefill"])
        need = input_len if inst.role == "prefill" else input_len + self.output_len[rid]
        if need > inst.kv_capacity:
            return  # can never fit: reported unfinished
        if inst.prefix_cache is not None and self.req.hash_ids is not None:
            hits = inst.lookup_prefix(self.req.hash_ids[rid]) * self.req.block_tokens
            self.done_tokens[rid] = min(hits, input_len - 1)
            self.num_hit_tokens += self.done_tokens[rid]
        inst.waiting.append(rid)
        inst.queued_prefill_tokens += input_len - self.done_tokens[rid]
        if not inst.busy:
            self._start_step(inst, now)

    def _poll(self, now: float, more_arrivals: bool) -> None:
        self.router.poll(self.instances)
        if more_arrivals:  # polls only matter to arrivals still to come
            self._push(now + self.router.poll_interval_s, _POLL, 0)

    # -- KV handoff (splitserve.planner.handoff) ----------------------------------------
    _hand_off = handoff.hand_off
    _admit_pending = handoff.admit_pending
    _transfer_done = handoff.transfer_done

    # -- instance steps -----------------------------------------------------------------
    def _start_step(self, inst: Instance, now: float) -> None:
        if not inst.waiting and not inst.ready:
            # Fast path (most steps): a pure decode step.
            if not inst.num_running:
                inst.busy = False
                return
            step_s = inst.model.step_s(0, 0.0, 0, inst.num_running, inst.ctx_tokens)
            inst.has_decode = True
            inst.step_s = step_s
            inst.busy = True
            inst.step_started_s = now
            self.num_steps += 1
            self.tally.add(inst.idx, 0, inst.num_running, step_s)
            self.seq += 1
            gap_s = self.gap_s + self.gap_seq_s * inst.num_running
            heapq.heappush(self.events, (now + gap_s + step_s, self.seq, _STEP_END, inst.idx, 0))
            return
        num_joining = len(inst.ready)
        for rid in inst.ready:
            inst.join_running(rid, self.input_len[rid], self.output_len[rid])
        inst.ready.clear()
        num_decode = inst.num_running
        batch = pack_prompts(self, inst, self.sched, num_decode, now)
        chunks = batch.chunks
        has_decode = num_decode > 0 and (self.sched.chunked_prefill or not chunks)
        if not chunks and not has_decode:
            inst.busy = False
            return
        n_dec = num_decode if has_decode else 0
        ctx = inst.ctx_tokens if has_decode else 0
        step_s = inst.model.step_s(batch.num_tokens, batch.attn_pairs, batch.kv_tokens, n_dec,
                                   ctx)
        if (chunks and self.sched.continuation_prompt_scale != 1.0
                and all(cached > 0 for _, _, cached in chunks)):
            step_s *= self.sched.continuation_prompt_scale
        if num_joining and self.transfer is not None:
            step_s += num_joining * self.transfer.join_s
        inst.chunks = chunks
        inst.has_decode = has_decode
        inst.step_s = step_s
        inst.busy = True
        inst.step_started_s = now
        self.num_steps += 1
        self.tally.add(inst.idx, batch.num_tokens, n_dec, step_s)
        self._push(now + self.gap_s + self.gap_seq_s * n_dec + step_s, _STEP_END, inst.idx)

    def _end_step(self, inst: Instance, now: float) -> None:
        if inst.has_decode:
            inst.decode_step += 1
            inst.ctx_tokens += inst.num_running
            running = inst.running
            while running and running[0][0] <= inst.decode_step:
                _, rid = heapq.heappop(running)
                inst.num_running -= 1
                inst.ctx_tokens -= self.input_len[rid] + self.output_len[rid]
                self.finish_s[rid] = now
                inst.kv_used -= self.reserved[rid]
                slo = self.slo
                if slo is not None:
                    tpot_s = (now - self.first_s[rid]) / (self.output_len[rid] - 1)
                    if tpot_s > slo.tpot_s:
                        self._miss(rid)
            if inst.role == "decode" and inst.pending:
                self._admit_pending(inst, now)
        if not inst.chunks:
            self._start_step(inst, now)
            return
        for rid, take, _ in inst.chunks:
            self.done_tokens[rid] += take
            inst.queued_prefill_tokens -= take
            if self.done_tokens[rid] < self.input_len[rid]:
                continue
            self.first_s[rid] = now
            if self.slo is not None and now - self.arrival[rid] > self.slo.ttft_s:
                self._miss(rid)
            if self.output_len[rid] == 1:
                self.finish_s[rid] = now
                inst.kv_used -= self.reserved[rid]
            elif inst.role == "prefill":
                self._hand_off(rid, now)
            else:
                inst.join_running(rid, self.input_len[rid], self.output_len[rid])
        inst.chunks = []
        self._start_step(inst, now)

    def _miss(self, rid: int) -> None:
        if not self.missed[rid]:
            self.missed[rid] = True
            self.num_missed += 1


def simulate(
    requests: Requests, pools: Sequence[Pool], scheduler: SchedulerConfig | None = None,
    transfer: TransferConfig | None = None, local_prefill_max_len: int = 0,
    prefix_cache: bool = True, stop_after_misses: tuple[Slo, int] | None = None,
    overhead: ServingOverhead | None = None, routing: str = "tokens",
    poll_interval_s: float = 0.5, poll_offset_s: float = 0.0, saturated_num_waiting: int = 0,
) -> SimResult:
    """Run one simulation; see `Simulation`. `overhead`: serving-path costs on top of
    every pool's latency model and token delivery (see `splitserve.planner.overhead`);
    None simulates the bare engine."""
    if overhead is not None:
        pools = [Pool(p.role, p.num_instances, with_overhead(p.latency_model, overhead))
                 for p in pools]
        if stop_after_misses is not None and overhead.delivery_s > 0:
            # the early stop judges engine-side TTFT: leave room for the delivery delay
            slo, k = stop_after_misses
            ttft_s = max(slo.ttft_s - overhead.delivery_s, 1e-12)
            stop_after_misses = (Slo(ttft_s, slo.tpot_s, slo.attainment), k)
    cls: type[Simulation] = Simulation
    if scheduler is not None and scheduler.host:
        from splitserve.planner.host_simulation import HostSimulation  # it subclasses this

        cls = HostSimulation
    result = cls(requests, pools, scheduler, transfer, local_prefill_max_len, prefix_cache,
                 stop_after_misses, routing, poll_interval_s, poll_offset_s,
                 saturated_num_waiting).run()
    return delayed(result, overhead.delivery_s) if overhead is not None else result
