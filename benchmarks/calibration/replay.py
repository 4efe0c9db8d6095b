"""Replay recorded requests (lengths and actual send times) through the planner's simulator
on the run's topology, priced by the measured profile plus optional serving overheads."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.calibration.setup import TOPOLOGIES, Setup
from benchmarks.calibration.step_metrics import averaged
from splitserve.planner import (
    HostShare,
    Pool,
    ProfileLatencyModel,
    Requests,
    SchedulerConfig,
    ServingOverhead,
    TransferConfig,
    simulate,
)
from splitserve.planner.overhead import with_overhead
from splitserve.router.policies import PolicyConfig

BLOCK_SIZE = 16


@dataclass(frozen=True)
class Link:
    """The prefill -> decode KV handoff as the simulator prices it: bytes / bw + latency."""

    bytes_s: float
    latency_s: float
    join_s: float = 0.0  # TransferConfig.join_s
    # a transfer out of a computing prefill worker (TransferConfig.busy_source_*)
    busy_bytes_s: float | None = None
    busy_extra_latency_s: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """bytes_s and latency_s, and the busy-source terms where set (a fit's "link")."""
        out = {"bytes_s": self.bytes_s, "latency_s": self.latency_s}
        if self.busy_bytes_s is not None:
            out.update(busy_bytes_s=self.busy_bytes_s,
                       busy_extra_latency_s=self.busy_extra_latency_s)
        return out


class BusyCounter:
    """Wraps a latency model and sums the simulated engine busy time (the simulator asks
    for every step's duration exactly once, when the step starts)."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.tensor_parallel = base.tensor_parallel
        self.kv_capacity_tokens = base.kv_capacity_tokens
        self.kv_bytes_per_token = base.kv_bytes_per_token
        self.num_layers = base.num_layers
        self.busy_s = 0.0
        self.prompt_busy_s = 0.0  # of steps that computed prompt tokens
        self.num_steps = 0
        # pure decode steps by batch size (what a price at the mean batch misses)
        self.decode_batches: Counter[int] = Counter()

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        seconds = float(self.base.step_s(num_prefill_tokens, prefill_attn_pairs,
                                         prefill_kv_tokens, num_decode_seqs, decode_ctx_tokens))
        self.busy_s += seconds
        if num_prefill_tokens:
            self.prompt_busy_s += seconds
        self.num_steps += seconds > 0
        if not num_prefill_tokens and num_decode_seqs:
            self.decode_batches[num_decode_seqs] += 1
        return seconds


def sent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that were sent, in send order: what the simulator replays."""
    return sorted((r for r in records if r["send_s"] is not None), key=lambda r: r["send_s"])


def latency_model(setup: Setup, profile: dict[str, Any]) -> ProfileLatencyModel:
    # the serving engine's KV pool (--num-blocks), not the profiler's default pool
    return ProfileLatencyModel({**profile, "kv_capacity_tokens": setup.num_blocks * BLOCK_SIZE})


# Replays averaged over (their per-request arrays concatenated): with step jitter, one per
# jitter seed; with polled routing, one per phase of the router's polls against the run
# (both unknown: the statistics are over their distribution)
NUM_DRAWS = 4
POLL_INTERVAL_S = 0.5  # splitserve/router/config.py RouterConfig.poll_interval_s
# the router's overflow rule: every prefill worker has this many requests waiting
ROUTER_SATURATED_NUM_WAITING = PolicyConfig().saturated_num_waiting


def replay(setup: Setup, topology: str, records: list[dict[str, Any]],
           profile: dict[str, Any], link: Link, overhead: ServingOverhead | None = None,
           step_scale: dict[str, float] | None = None, routing: str = "requests",
           chunk_prefill_role: bool = False, step_gap_s: float = 0.0,
           step_gap_per_seq_s: float = 0.0, host: HostShare | None = None,
           saturated_num_waiting: int = 0, continuation_prompt_scale: float = 1.0) -> dict[str, Any]:
    """Simulate `records` (see `sent`); per-request arrays in that order, plus busy time.
    `step_scale[role]` replaces `overhead.step_scale` for that role's pool. `routing`:
    how the simulated router picks a mixed worker (see `Simulation`).
    `chunk_prefill_role`: the simulated prefill worker cuts prompts to its budget as the
    engine does (`SchedulerConfig.prefill_role_chunks`). `step_gap_s`: the engine loop's
    time between steps (`SchedulerConfig.step_gap_s`), `step_gap_per_seq_s` its part per
    decoding sequence (`SchedulerConfig.step_gap_per_seq_s`). `host`: the front end on
    the workers' cores (`SchedulerConfig.host`). `saturated_num_waiting`: the router's
    overflow rule (`simulate`'s; 0: off, `ROUTER_SATURATED_NUM_WAITING`: the router's).
    `continuation_prompt_scale`: `SchedulerConfig.continuation_prompt_scale`."""
    jitter = overhead is not None and overhead.prefill_jitter_cv > 0
    polled = routing == "polled" and TOPOLOGIES[topology][2] > 1
    if not jitter and not polled:
        return _replay_once(setup, topology, records, profile, link, overhead, step_scale,
                            routing, 0.0, chunk_prefill_role, step_gap_s, step_gap_per_seq_s,
                            host, saturated_num_waiting, continuation_prompt_scale)
    runs = [_replay_once(setup, topology, records, profile, link,
                         dataclasses.replace(overhead, jitter_seed=k) if overhead else None,
                         step_scale, routing, k * POLL_INTERVAL_S / NUM_DRAWS,
                         chunk_prefill_role, step_gap_s, step_gap_per_seq_s, host,
                         saturated_num_waiting, continuation_prompt_scale)
            for k in range(NUM_DRAWS)]
    out: dict[str, Any] = {key: np.concatenate([r[key] for r in runs])
                           for key in ("ttft_s", "tpot_s", "finished", "prefill_stage_s",
                                       "local_prefill")}
    out["token_rate"] = float(np.mean([r["token_rate"] for r in runs]))
    out["engine_busy_s"] = {role: round(float(np.mean([r["engine_busy_s"][role] for r in runs])),
                                        3) for role in runs[0]["engine_busy_s"]}
    out["prompt_busy_s"] = {role: float(np.mean([r["prompt_busy_s"][role] for r in runs]))
                            for role in runs[0]["prompt_busy_s"]}
    out["num_steps"] = {role: int(np.mean([r["num_steps"][role] for r in runs]))
                        for role in runs[0]["num_steps"]}
    out["step_stats"] = averaged([r["step_stats"] for r in runs])
    out["decode_batches"] = {role: sum((r["decode_batches"][role] for r in runs), Counter())
                             for role in runs[0]["decode_batches"]}
    out["num_draws"] = len(runs)
    return out


def _replay_once(setup: Setup, topology: str, records: list[dict[str, Any]],
                 profile: dict[str, Any], link: Link, overhead: ServingOverhead | None,
                 step_scale: dict[str, float] | None, routing: str,
                 poll_offset_s: float, chunk_prefill_role: bool = False,
                 step_gap_s: float = 0.0, step_gap_per_seq_s: float = 0.0,
                 host: HostShare | None = None, saturated_num_waiting: int = 0,
                 continuation_prompt_scale: float = 1.0) -> dict[str, Any]:
    rows = sent(records)
    requests = Requests(
        arrival_s=np.array([r["send_s"] for r in rows], dtype=np.float64),
        input_len=np.array([r["input_len"] for r in rows], dtype=np.int64),
        # what the engine generated (ignore_eos): the bench's `usage` count
        output_len=np.array([max(r["output_len"] or r["requested_output_len"], 1)
                             for r in rows], dtype=np.int64))
    base = latency_model(setup, profile)
    num_prefill, num_decode, num_mixed = TOPOLOGIES[topology]
    roles = {"mixed": num_mixed} if num_mixed else {"prefill": num_prefill, "decode": num_decode}
    shared = overhead or ServingOverhead()
    counters = {role: BusyCounter(with_overhead(base, dataclasses.replace(
        shared, step_scale=(step_scale or {}).get(role, shared.step_scale)))) for role in roles}
    pools = [Pool(role, n, counters[role]) for role, n in roles.items()]  # type: ignore[arg-type]
    transfer = None if num_mixed else TransferConfig(
        link.bytes_s, link.latency_s, join_s=link.join_s,
        busy_source_bw_bytes_s=link.busy_bytes_s,
        busy_source_extra_latency_s=link.busy_extra_latency_s)
    # the engine chunks prompts on every role: so does the simulated prefill role here
    # (the previous calibrations batched whole prompts there; `chunk_prefill_role=False`)
    sched = SchedulerConfig(token_budget=setup.token_budget,
                            prefill_token_budget=setup.token_budget,
                            max_num_seqs=setup.max_num_seqs, chunked_prefill=True,
                            prefill_role_chunks=chunk_prefill_role, step_gap_s=step_gap_s,
                            step_gap_per_seq_s=step_gap_per_seq_s, host=host,
                            continuation_prompt_scale=continuation_prompt_scale)
    # delivery delay only: the step terms are already inside the counters' models
    delivery = ServingOverhead(delivery_s=overhead.delivery_s) if overhead else None
    # the router picks the mixed worker with the fewest requests in it, then the least KV
    # in use (splitserve/router/policies.py least_loaded); "requests" counts them live,
    # "polled" as the router does (its last poll of each worker, or its own in-flight
    # count if higher)
    result = simulate(requests, pools, sched, transfer,
                      local_prefill_max_len=0 if num_mixed else setup.short_prompt_len,
                      overhead=delivery, routing=routing, poll_interval_s=POLL_INTERVAL_S,
                      poll_offset_s=poll_offset_s, saturated_num_waiting=saturated_num_waiting)
    done = result.finished
    span_s = float(np.max(result.finish_s[done]) - np.min(result.arrival_s)) if done.any() else 0.0
    assert result.first_scheduled_s is not None
    delivery_s = delivery.delivery_s if delivery else 0.0
    return {"ttft_s": result.ttft_s, "tpot_s": result.tpot_s, "finished": result.finished,
            # prefilled on the decode worker (short, or overflowed while the prefill
            # worker was saturated): what the router's route_kind records
            "local_prefill": result.local_prefill,
            # engine side: first prompt chunk scheduled -> first token sampled
            "prefill_stage_s": result.first_token_s - delivery_s - result.first_scheduled_s,
            # output tokens per second of the simulated run: the load a run offers, known
            # without measuring it (what `fit` relates the step slowdown to)
            "token_rate": float(requests.output_len.sum()) / span_s if span_s > 0 else 0.0,
            "engine_busy_s": {role: round(c.busy_s, 3) for role, c in counters.items()},
            "prompt_busy_s": {role: c.prompt_busy_s for role, c in counters.items()},
            "num_steps": {role: c.num_steps for role, c in counters.items()},
            "decode_batches": {role: c.decode_batches for role, c in counters.items()},
            # per role: steps by kind, their seconds and batch sizes (step_metrics.py)
            "step_stats": result.steps.by_role() if result.steps else {}, "num_draws": 1}


def prompt_marks(record: dict[str, Any], *marks: str) -> list[float] | None:
    """These router-timeline marks (e.g. "engine_first_token_s") of the worker that
    computed the request's prompt ("full" on a mixed worker, "prefill" in a split); None
    where no such worker recorded them all."""
    tl = record.get("timeline") or {}
    for role in ("full", "prefill"):
        values = [tl.get(f"{role}.{mark}") for mark in marks]
        if all(v is not None for v in values):
            return [float(v) for v in values if v is not None]
    return None


def prompt_stage_s(record: dict[str, Any]) -> float | None:
    """A request's engine first scheduled -> first token (router timeline, the worker that
    prefilled it); None without a timeline."""
    marks = prompt_marks(record, "engine_first_scheduled_s", "engine_first_token_s")
    return marks[1] - marks[0] if marks else None


def real_arrays(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The client's TTFT, TPOT and success per request, in `sent` order."""
    rows = sent(records)

    def arr(key: str) -> np.ndarray:
        return np.array([r[key] if r[key] is not None else np.nan for r in rows], dtype=float)

    return {"ttft_s": arr("ttft_s"), "tpot_s": arr("tpot_s"),
            # the engine's first scheduled -> first token (router timeline), NaN without one
            "prefill_stage_s": np.array([prompt_stage_s(r) for r in rows], dtype=float),
            "first_itl_s": arr("first_itl_s"), "median_itl_s": arr("median_itl_s"),
            "input_len": arr("input_len"), "output_len": arr("output_len"),
            "finished": np.array([bool(r["success"]) for r in rows])}
