"""Prefill attention alone: the SDPA loop vs the native bf16 kernel (AMX / AVX512-BF16).

The attention of one llama-110m layer (12 query heads, 4 KV heads, head_dim 64, bf16) for
one engine step of 16 fresh prompts of 16..512 tokens (seeded, as the profiled prefill),
and for the same prompts as continuation chunks (their second half, over a cached first
half). Each variant runs `paged_attention` (K/V write included) on one thread; median of
repeats. Writes benchmarks/results/prefill_attention.json.

    taskset -c 0 flock /work/wt/cpu.lock python -m benchmarks.prefill_attention
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from splitserve.model import ForwardBatch, native
from splitserve.model.attention import AttentionPlan, paged_attention, plan_attention

RESULTS = Path(__file__).resolve().parent / "results" / "prefill_attention.json"
HEADS, KV_HEADS, HEAD_DIM, BLOCK_SIZE = 12, 4, 64, 16


def make_step(prompt_lens: list[int], prefix_lens: list[int]) -> tuple[ForwardBatch, int]:
    """One step computing prompt_lens[i] - prefix_lens[i] tokens of each prompt."""
    seqs, next_block = [], 0
    for n, start in zip(prompt_lens, prefix_lens, strict=True):
        num = -(-n // BLOCK_SIZE)
        seqs.append(([7] * (n - start), start, list(range(next_block, next_block + num))))
        next_block += num
    return ForwardBatch.build(seqs, BLOCK_SIZE), next_block


def causal_flops(prompt_lens: list[int], prefix_lens: list[int]) -> float:
    """q.k and p.v multiply-adds (2 flops each) over the visible (causal) pairs."""
    pairs = sum(sum(range(s + 1, n + 1)) for n, s in zip(prompt_lens, prefix_lens, strict=True))
    return 2 * 2 * pairs * HEADS * HEAD_DIM


def time_variant(batch: ForwardBatch, num_blocks: int, plan: AttentionPlan, reps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    tokens = batch.num_tokens
    q = torch.randn(tokens, HEADS, HEAD_DIM, generator=gen).to(torch.bfloat16)
    k = torch.randn(tokens, KV_HEADS, HEAD_DIM, generator=gen).to(torch.bfloat16)
    v = torch.randn(tokens, KV_HEADS, HEAD_DIM, generator=gen).to(torch.bfloat16)
    cache = torch.randn(2, num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM).to(torch.bfloat16)
    paged_attention(q, k, v, cache, batch.slot_mapping, plan)  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        paged_attention(q, k, v, cache, batch.slot_mapping, plan)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(0)
    prompt_lens = [rng.randint(16, 512) for _ in range(16)]
    path = native.prefill_path()
    cases: dict[str, Any] = {}
    for case, prefix_lens in (("fresh", [0] * 16), ("continuation", [n // 2 for n in prompt_lens])):
        batch, num_blocks = make_step(prompt_lens, prefix_lens)
        plan = plan_attention(batch, BLOCK_SIZE, None, num_blocks, native_decode=True)
        flops = causal_flops(prompt_lens, prefix_lens)
        sdpa_s = time_variant(batch, num_blocks, replace(plan, native_prefill=None), args.reps)
        row: dict[str, Any] = {"tokens": batch.num_tokens, "gflop": round(flops / 1e9, 3),
                               "sdpa_ms": round(sdpa_s * 1e3, 2),
                               "sdpa_gflops": round(flops / sdpa_s / 1e9, 1)}
        if path is not None:
            native_s = time_variant(batch, num_blocks, plan, args.reps)
            row.update(native_ms=round(native_s * 1e3, 2),
                       native_gflops=round(flops / native_s / 1e9, 1),
                       speedup=round(sdpa_s / native_s, 2))
        cases[case] = row
        print(case, row)
    result = {
        "command": "taskset -c 0 flock /work/wt/cpu.lock python -m benchmarks.prefill_attention",
        "what": "one layer's paged_attention (K/V write included) for one prefill step, bf16, "
                "1 thread, median of reps",
        "shape": {"heads": HEADS, "kv_heads": KV_HEADS, "head_dim": HEAD_DIM,
                  "block_size": BLOCK_SIZE, "prompt_lens": prompt_lens},
        "native_path": path, "reps": args.reps, "torch": torch.__version__, "cases": cases,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
