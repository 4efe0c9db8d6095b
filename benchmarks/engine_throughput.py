"""Useful tokens/s of splitserve's offline engine vs Hugging Face `transformers` generate.

Same machine, same random-weight Llama-110M checkpoint, same requests, one process, runs
interleaved (ours, HF batch sizes, ours, ...) and medians reported: the machine is shared.
Workloads: 64 requests with prompt lengths uniform 16..512 and outputs uniform 16..256
(ignore_eos; only the tokens each request asked for count), and batch 1 (128 in, 128 out).

    python -m benchmarks.engine_throughput            # writes benchmarks/results/engine_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_models import make_bench_model
from benchmarks.engine_common import (
    HFEngine,
    OurEngine,
    environment,
    fixed_workload,
    mixed_workload,
    summary,
)

RESULTS = Path(__file__).resolve().parent / "results" / "engine_throughput.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="llama-110m")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both engines (2 collapses under shared load)")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--hf-batch-sizes", default="16,64")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = os.getloadavg()
    t_start = time.time()
    model_dir = make_bench_model(args.model)
    mixed = mixed_workload(args.num_requests)
    single = fixed_workload(1)
    hf_sizes = [int(b) for b in args.hf_batch_sizes.split(",")]
    ours = OurEngine(model_dir, args.dtype, args.threads)
    hf = HFEngine(model_dir, args.dtype, args.threads)
    ours.run(fixed_workload(2, 32, 8))  # warm-up: first-call allocations, oneDNN kernels
    hf.run(fixed_workload(2, 32, 8), 2)
    runs: dict[str, list[float]] = {"ours_mixed": [], "ours_b1": [], "hf_b1": []}
    for b in hf_sizes:
        runs[f"hf_mixed_bs{b}"] = []
    for rep in range(args.reps):
        runs["ours_mixed"].append(ours.run(mixed))
        for b in hf_sizes:
            runs[f"hf_mixed_bs{b}"].append(hf.run(mixed, b))
        runs["ours_b1"].append(ours.run(single))
        runs["hf_b1"].append(hf.run(single, 1))
        print(f"rep {rep}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in runs.items()), flush=True)
    med = {k: summary(v) for k, v in runs.items()}
    best_hf = max((k for k in med if k.startswith("hf_mixed")), key=lambda k: med[k]["median"])
    result: dict[str, Any] = {
        "command": "python -m benchmarks.engine_throughput " + " ".join(
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "out"),
        "model": args.model, "model_dir": str(model_dir),
        "workload": {"mixed": f"{args.num_requests} requests, prompt 16..512, output 16..256, "
                              "seed 0, ignore_eos",
                     "mixed_useful_tokens": sum(o for _, o in mixed),
                     "mixed_prompt_tokens": sum(len(p) for p, _ in mixed),
                     "batch1": "1 request, 128 prompt tokens, 128 output tokens"},
        "hf_baseline": "generate, greedy, left padding, batches in request order; each batch "
                       "generates its longest requested output; only requested tokens count",
        "tokens_per_s": med, "best_hf_mixed": best_hf,
        "ratio_mixed_vs_best_hf": med["ours_mixed"]["median"] / med[best_hf]["median"],
        "ratio_batch1": med["ours_b1"]["median"] / med["hf_b1"]["median"],
        "environment": environment(args.threads, args.dtype),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "wall_s": time.time() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':<18}{'median tok/s':>14}{'min':>10}{'max':>10}")
    for k, v in med.items():
        print(f"{k:<18}{v['median']:>14.1f}{v['min']:>10.1f}{v['max']:>10.1f}")
    print(f"mixed: ours / best HF ({best_hf}) = {result['ratio_mixed_vs_best_hf']:.2f}x; "
          f"batch 1: {result['ratio_batch1']:.2f}x; load {load_start} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
