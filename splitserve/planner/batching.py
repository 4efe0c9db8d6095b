"""Which prompt chunks one simulated engine step computes (the scheduler's admission rule).

A step of a mixed or decode instance takes its running decodes (one token each) and then
prompt chunks from the FIFO queue while the token budget lasts; with chunked prefill the
decode tokens share the budget and the last prompt is cut to fit (Sarathi / vLLM).
Without chunking, or on a prefill instance, whole prompts are batched up to the budget and
a longer one runs alone (unless `prefill_role_chunks`: then a prefill instance cuts the
last prompt to fit too, as splitserve's engine does). A request is admitted (its KV reserved: prompt + output, or the
prompt alone on a prefill instance) when its first chunk is taken; admission stops at the
first request that does not fit the KV pool or the sequence limit, so the queue stays
FIFO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from splitserve.planner.fleet import Instance, SchedulerConfig


class RequestTable(Protocol):
    """Per-request state of a simulation, indexed by request id."""

    input_len: list[int]
    output_len: list[int]
    done_tokens: list[int]  # prompt tokens computed (or prefix-cached) so far
    reserved: list[int]  # KV tokens reserved on the request's instance
    admitted: list[bool]
    home: list[int]  # instance that prefills the request
    first_sched_s: list[float]  # when its first chunk was scheduled (NaN before)


@dataclass
class PromptBatch:
    """The prompt side of one step: (request, new tokens, cached before) per chunk and the
    latency model's prompt arguments."""

    chunks: list[tuple[int, int, int]]
    num_tokens: int
    attn_pairs: float
    kv_tokens: int


def pack_prompts(table: RequestTable, inst: Instance, sched: SchedulerConfig,
                 num_decode: int, now: float) -> PromptBatch:
    """Take prompt chunks from `inst.waiting` for a step beside `num_decode` decodes:
    admits requests (updating `inst.kv_used` and `table`) and pops every prompt whose last
    chunk is taken; a cut prompt stays at the queue head."""
    prefill_role = inst.role == "prefill"
    chunked = sched.chunked_prefill
    budget = sched.prefill_token_budget if prefill_role else sched.token_budget
    if chunked:
        budget -= num_decode  # decode tokens share the step's budget (Sarathi / vLLM)
    chunks: list[tuple[int, int, int]] = []
    tokens = 0
    pairs = 0.0
    kv_tokens = 0
    active = num_decode + inst.num_incoming
    input_len = table.input_len
    while inst.waiting and budget > 0:
        rid = inst.waiting[0]
        if not table.admitted[rid]:
            need = input_len[rid] + (0 if prefill_role else table.output_len[rid])
            if inst.kv_used + need > inst.kv_capacity:
                break
            if not prefill_role and active + len(chunks) >= sched.max_num_seqs:
                break
            inst.kv_used += need
            table.reserved[rid] = need
            table.admitted[rid] = True
            table.home[rid] = inst.idx
        cached = table.done_tokens[rid]
        remaining = input_len[rid] - cached
        if chunked and (not prefill_role or sched.prefill_role_chunks):
            take = min(remaining, budget)
        else:  # whole prompts, batched up to the budget; a longer one runs alone
            if remaining > budget and chunks:
                break
            take = remaining
        chunks.append((rid, take, cached))
        if math.isnan(table.first_sched_s[rid]):
            table.first_sched_s[rid] = now
        tokens += take
        pairs += take * cached + take * (take + 1) / 2
        kv_tokens += cached + take
        budget -= take
        if take < remaining:
            break
        inst.waiting.popleft()
    return PromptBatch(chunks, tokens, pairs, kv_tokens)
