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
the prefill instance frees the prompt's KV.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import numpy as np

from splitserve.planner.fleet import (
    Instance,
    Pool,
    SchedulerConfig,
    TransferConfig,
    make_instances,
)
from splitserve.planner.overhead import ServingOverhead, delayed, with_overhead
from splitserve.planner.results import SimResult, Slo
from splitserve.planner.workload import Requests

_STEP_END = 0
_TRANSFER_DONE = 1
_POLL = 2
ROUTINGS = ("tokens", "requests", "polled")


class Simulation:
    """One run; construct, call `run()` once."""

    def __init__(
        self,
        requests: Requests,
        pools: Sequence[Pool],
        scheduler: SchedulerConfig | None = None,
        transfer: TransferConfig | None = None,
        local_prefill_max_len: int = 0,
        prefix_cache: bool = True,
        stop_after_misses: tuple[Slo, int] | None = None,
        routing: str = "tokens",
        poll_interval_s: float = 0.5,
        poll_offset_s: float = 0.0,
    ) -> None:
        """stop_after_misses=(slo, k): end the run early once k + 1 requests missed the
        SLO (the search only needs to know the target is out of reach); the requests not
        yet finished are then reported unfinished. routing: how an arrival picks a mixed
        instance: "tokens" (fewest queued prompt tokens + KV tokens in use), "requests"
        (fewest requests waiting or running, then least KV in use), or "polled"
        (splitserve's router as it runs: it sees each worker's load as last polled,
        every `poll_interval_s` from `poll_offset_s` on, and its own count of the
        requests it sent there that have not finished; it picks the fewest of
        max(polled, own), then the least polled KV in use)."""
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        if not math.isfinite(poll_interval_s) or poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be a finite number > 0, got "
                             f"{poll_interval_s}")
        if not 0 <= poll_offset_s < math.inf:
            raise ValueError(f"poll_offset_s must be a finite number >= 0, got {poll_offset_s}")
        self.routing = routing
        self.poll_interval_s = poll_interval_s
        if transfer is None and any(p.role == "prefill" for p in pools):
            raise ValueError("a disaggregated fleet needs a TransferConfig")
        self.req = requests
        self.sched = scheduler or SchedulerConfig()
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
        self.num_local = 0
        self.num_hit_tokens = 0
        self.num_steps = 0
        self.slo = stop_after_misses[0] if stop_after_misses else None
        self.miss_budget = stop_after_misses[1] if stop_after_misses else len(requests)
        self.missed = [False] * n
        self.num_missed = 0
        self.arrival: list[float] = requests.arrival_s.tolist()
        # "polled" routing: (requests, KV tokens in use) per instance at the last poll;
        # before the first poll the router knows nothing (zeros)
        self.polled: list[tuple[int, int]] = [(0, 0)] * len(self.instances)
        if routing == "polled" and "mixed" in self.by_role and n:
            self._push(poll_offset_s, _POLL, 0)

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
            arrival_s=self.req.arrival_s,
            output_len=self.req.output_len,
            first_token_s=np.asarray(self.first_s),
            finish_s=np.asarray(self.finish_s),
            num_local_prefills=self.num_local,
            num_prefix_hit_tokens=self.num_hit_tokens,
            num_steps=self.num_steps,
            first_scheduled_s=np.asarray(self.first_sched_s),
        )

    # -- routing ------------------------------------------------------------------------
    def _arrive(self, rid: int, now: float) -> None:
        input_len = self.input_len[rid]
        if "mixed" in self.by_role:
            pool = self.by_role["mixed"]
            if self.routing == "requests":
                inst = min(pool, key=lambda x: (self._num_requests(x), x.kv_used))
            elif self.routing == "polled":
                polled = self.polled
                inst = min(pool, key=lambda x: (
                    max(polled[x.idx][0], self._num_requests(x)), polled[x.idx][1]))
            else:
                inst = min(pool, key=lambda x: x.queued_prefill_tokens + x.kv_used)
        elif input_len <= self.local_max_len:
            inst = min(self.by_role["decode"], key=Instance.decode_load)
            self.num_local += 1
        else:
            inst = min(self.by_role["prefill"], key=lambda x: x.queued_prefill_tokens)
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

    def _num_requests(self, inst: Instance) -> int:
        """Requests queued or running on `inst`, counting one whose last prompt chunk is
        in the current step (it has left `waiting` and not yet joined `running`): the
        engine counts it running, the router in flight."""
        input_len = self.input_len
        in_step = sum(1 for rid, take, cached in inst.chunks if cached + take >= input_len[rid])
        return len(inst.waiting) + inst.num_running + in_step

    def _poll(self, now: float, more_arrivals: bool) -> None:
        for inst in self.by_role["mixed"]:
            self.polled[inst.idx] = (self._num_requests(inst), inst.kv_used)
        if more_arrivals:  # polls only matter to arrivals still to come
            self._push(now + self.poll_interval_s, _POLL, 0)

    def _hand_off(self, rid: int, now: float) -> None:
        dec = min(self.by_role["decode"], key=Instance.decode_load)
        if self.input_len[rid] + self.output_len[rid] > dec.kv_capacity:
            self._free(self.instances[self.home[rid]], rid, now)
            return  # never fits on a decode instance: unfinished
        dec.pending.append(rid)
        self._admit_pending(dec, now)

    # -- KV transfer --------------------------------------------------------------------
    def _admit_pending(self, dec: Instance, now: float) -> None:
        assert self.transfer is not None
        cfg = self.transfer
        bw = cfg.link_bw_bytes_s * dec.model.tensor_parallel
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
            full_s = self.input_len[rid] * dec.model.kv_bytes_per_token / bw
            if cfg.layer_overlap:
                # All layers but the last went out while the prefill computed the next ones.
                src = self.instances[self.home[rid]]
                hidden = src.step_s * (dec.model.num_layers - 1) / dec.model.num_layers
                full_s = max(full_s - hidden, full_s / dec.model.num_layers)
            start = max(now, dec.link_free_s)
            dec.link_free_s = start + full_s
            self._push(start + full_s + cfg.latency_s, _TRANSFER_DONE, dec.idx, rid)

    def _transfer_done(self, dec: Instance, rid: int, now: float) -> None:
        dec.num_incoming -= 1
        dec.ready.append(rid)
        src = self.instances[self.home[rid]]
        src.kv_used -= self.input_len[rid]
        if not src.busy and src.waiting:
            self._start_step(src, now)
        if not dec.busy:
            self._start_step(dec, now)

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
            self.num_steps += 1
            self.seq += 1
            heapq.heappush(self.events, (now + step_s, self.seq, _STEP_END, inst.idx, 0))
            return
        for rid in inst.ready:
            inst.join_running(rid, self.input_len[rid], self.output_len[rid])
        inst.ready.clear()
        prefill_role = inst.role == "prefill"
        chunked = self.sched.chunked_prefill
        num_decode = inst.num_running
        budget = self.sched.prefill_token_budget if prefill_role else self.sched.token_budget
        if chunked:
            budget -= num_decode  # decode tokens share the step's budget (Sarathi / vLLM)
        chunks: list[tuple[int, int, int]] = []
        tokens = 0
        pairs = 0.0
        kv_tokens = 0
        active = num_decode + inst.num_incoming
        while inst.waiting and budget > 0:
            rid = inst.waiting[0]
            if not self.admitted[rid]:
                need = self.input_len[rid] + (0 if prefill_role else self.output_len[rid])
                if inst.kv_used + need > inst.kv_capacity:
                    break
                if not prefill_role and active + len(chunks) >= self.sched.max_num_seqs:
                    break
                inst.kv_used += need
                self.reserved[rid] = need
                self.admitted[rid] = True
                self.home[rid] = inst.idx
            cached = self.done_tokens[rid]
            remaining = self.input_len[rid] - cached
            if chunked and not prefill_role:
                take = min(remaining, budget)
            else:  # whole prompts, batched up to the budget; a longer one runs alone
                if remaining > budget and chunks:
                    break
                take = remaining
            chunks.append((rid, take, cached))
            if math.isnan(self.first_sched_s[rid]):
                self.first_sched_s[rid] = now
            tokens += take
            pairs += take * cached + take * (take + 1) / 2
            kv_tokens += cached + take
            budget -= take
            if take < remaining:
                break
            inst.waiting.popleft()
        has_decode = num_decode > 0 and (chunked or not chunks)
        if not chunks and not has_decode:
            inst.busy = False
            return
        n_dec = num_decode if has_decode else 0
        ctx = inst.ctx_tokens if has_decode else 0
        step_s = inst.model.step_s(tokens, pairs, kv_tokens, n_dec, ctx)
        inst.chunks = chunks
        inst.has_decode = has_decode
        inst.step_s = step_s
        inst.busy = True
        self.num_steps += 1
        self._push(now + step_s, _STEP_END, inst.idx)

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

    def _free(self, inst: Instance, rid: int, now: float) -> None:
        inst.kv_used -= self.reserved[rid]
        if not inst.busy and inst.waiting:
            self._start_step(inst, now)


def simulate(
    requests: Requests,
    pools: Sequence[Pool],
    scheduler: SchedulerConfig | None = None,
    transfer: TransferConfig | None = None,
    local_prefill_max_len: int = 0,
    prefix_cache: bool = True,
    stop_after_misses: tuple[Slo, int] | None = None,
    overhead: ServingOverhead | None = None,
    routing: str = "tokens",
    poll_interval_s: float = 0.5,
    poll_offset_s: float = 0.0,
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
    result = Simulation(
        requests,
        pools,
        scheduler,
        transfer,
        local_prefill_max_len,
        prefix_cache,
        stop_after_misses,
        routing,
        poll_interval_s,
        poll_offset_s,
    ).run()
    return delayed(result, overhead.delivery_s) if overhead is not None else result
