"""Decode memory-bandwidth utilization (MBU) of splitserve's engine at batch 1.

MBU = (weight bytes + KV bytes read per decode step) / step time, divided by this machine's
memory read bandwidth, measured in the same run as the best of a few `torch.sum` reductions
over an array far larger than the CPU caches, with the engine's thread count. The model is
llama-110m in float32 (~440 MB of weights) or bfloat16 (~220 MB; bf16 decode runs the
native GEMV, splitserve/model/native_gemv.py). The embedding table is not counted (a step
reads one row of it); the LM head is. `torch.sum` is one sequential stream: a kernel that
reads several streams at once (the GEMV) can beat it, so MBU near or above 1 means "at the
memory's pace", not an error. The bandwidth of this shared machine also drifts with the
neighbours' load (12-16.6 GB/s seen): compare step times measured back to back.

    python -m benchmarks.engine_mbu          # writes benchmarks/results/engine_mbu.json
    python -m benchmarks.engine_mbu --dtype bfloat16 --out benchmarks/results/engine_mbu_bf16.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_models import make_bench_model
from benchmarks.engine_common import environment, fixed_workload

RESULTS = Path(__file__).resolve().parent / "results" / "engine_mbu.json"


def read_bandwidth(num_bytes: int, repeats: int) -> float:
    """Best bytes/s of summing a float32 array of `num_bytes` (reads every byte once)."""
    data = torch.ones(num_bytes // 4, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - t)
    return num_bytes / best


def decode_steps(llm: Any, prompt: list[int], num_new: int) -> tuple[list[float], list[int]]:
    """Wall time and context length of each pure-decode step of one request."""
    from splitserve.engine.sampling_params import SamplingParams

    engine = llm.engine
    engine.add_request(f"mbu-{time.monotonic_ns()}", prompt,
                       SamplingParams(max_tokens=num_new, ignore_eos=True, temperature=0.0))
    times, ctx_lens = [], []
    num_steps = 0
    while engine.has_work():
        t = time.perf_counter()
        engine.step()
        elapsed = time.perf_counter() - t
        num_steps += 1
        if num_steps > 1:  # step 1 is the prefill; step k reads a context of prompt + k - 1
            times.append(elapsed)
            ctx_lens.append(len(prompt) + num_steps - 1)
    return times, ctx_lens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-110m")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--bandwidth-bytes", type=int, default=1 << 30)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = os.getloadavg()
    t_start = time.time()
    torch.set_num_threads(args.threads)
    from splitserve.engine.llm import LLM

    llm = LLM(str(make_bench_model(args.model)), dtype=args.dtype, num_threads=args.threads,
              kv_cache_bytes=256 << 20, max_model_len=2048, enable_prefix_caching=False)
    model = llm.engine.runner.model
    embed = model.model.embed_tokens.weight
    embed_bytes = embed.numel() * embed.element_size()
    weight_bytes = llm.engine.runner.cost.weight_bytes - embed_bytes
    kv_bytes_per_token = llm.engine.runner.cost.kv_bytes_per_token
    prompt = fixed_workload(1, args.prompt_len, 1)[0][0]
    decode_steps(llm, prompt[:16], 4)  # warm-up
    bandwidths, step_medians, tokens_per_s, bytes_per_step = [], [], [], []
    for _ in range(args.reps):  # interleaved: bandwidth, decode, bandwidth, decode ...
        bandwidths.append(read_bandwidth(args.bandwidth_bytes, 3))
        times, ctx_lens = decode_steps(llm, prompt, args.new_tokens)
        step_medians.append(statistics.median(times))
        tokens_per_s.append(len(times) / sum(times))
        bytes_per_step.append(weight_bytes + kv_bytes_per_token * statistics.mean(ctx_lens))
    bandwidths.append(read_bandwidth(args.bandwidth_bytes, 3))
    step_s = statistics.median(step_medians)
    achieved = statistics.mean(bytes_per_step) / step_s
    peak = max(bandwidths)
    result = {
        "command": f"python -m benchmarks.engine_mbu --dtype {args.dtype} --threads "
                   f"{args.threads} --prompt-len {args.prompt_len} --new-tokens "
                   f"{args.new_tokens} --reps {args.reps}",
        "model": args.model, "weight_bytes_read_per_step": weight_bytes,
        "kv_bytes_per_token": kv_bytes_per_token,
        "mean_bytes_read_per_step": statistics.mean(bytes_per_step),
        "decode_step_s_median": step_s, "decode_step_s_per_rep": step_medians,
        "decode_tokens_per_s_per_rep": tokens_per_s,
        "achieved_bytes_per_s": achieved,
        "read_bandwidth_bytes_per_s_best": peak, "read_bandwidth_bytes_per_s_runs": bandwidths,
        "bandwidth_method": f"torch.sum over {args.bandwidth_bytes} bytes float32, "
                            f"{args.threads} thread(s), best of 3 per measurement",
        "mbu": achieved / peak,
        "environment": environment(args.threads, args.dtype),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "wall_s": time.time() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"decode step {step_s * 1e3:.1f} ms, {statistics.mean(bytes_per_step) / 1e6:.0f} MB/step "
          f"-> {achieved / 1e9:.1f} GB/s; read bandwidth {peak / 1e9:.1f} GB/s; "
          f"MBU {result['mbu']:.0%}; load {load_start} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
