"""Useful tokens/s of splitserve's engine vs Hugging Face `transformers` on one CUDA GPU.

The CPU benchmark (engine_throughput.py) on the GPU: same random-weight checkpoints, same
requests (64 mixed: prompt 16..512, output 16..256, ignore_eos; and batch 1: 128 in, 128
out), one process, runs interleaved and medians reported. Our CUDA path is the plain torch
path (gather + SDPA attention, eager PyTorch, no CUDA graphs): this measures where it
stands, not a tuned GPU engine.

    python -m benchmarks.engine_gpu --models llama-110m,llama-1b   # needs a CUDA device
"""

from __future__ import annotations

import argparse
import json
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

RESULTS = Path(__file__).resolve().parent / "results" / "engine_gpu.json"


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    model_dir = make_bench_model(name, dtype=args.dtype)
    mixed, single = mixed_workload(64), fixed_workload(1)
    ours = OurEngine(model_dir, args.dtype, 1, max_num_batched_tokens=args.max_num_batched_tokens,
                     device=args.device)
    hf = HFEngine(model_dir, args.dtype, 1, device=args.device)
    # warm-up on the real workload: the first pass pays cuBLAS/allocator/kernel-selection
    # costs for every new shape (it ran 2-6x slower than the second on an H200)
    ours.run(mixed)
    hf.run(mixed, 16)
    hf.run(mixed, 64)
    runs: dict[str, list[float]] = {"ours_mixed": [], "hf_mixed_bs16": [], "hf_mixed_bs64": [],
                                    "ours_b1": [], "hf_b1": []}
    for rep in range(args.reps):
        runs["ours_mixed"].append(ours.run(mixed))
        runs["hf_mixed_bs16"].append(hf.run(mixed, 16))
        runs["hf_mixed_bs64"].append(hf.run(mixed, 64))
        runs["ours_b1"].append(ours.run(single))
        runs["hf_b1"].append(hf.run(single, 1))
        print(f"{name} rep {rep}: " + ", ".join(f"{k}={v[-1]:.1f}" for k, v in runs.items()),
              flush=True)
    med = {k: summary(v) for k, v in runs.items()}
    best_hf = max(("hf_mixed_bs16", "hf_mixed_bs64"), key=lambda k: med[k]["median"])
    return {"model": name, "tokens_per_s": med, "best_hf_mixed": best_hf,
            "ratio_mixed_vs_best_hf": med["ours_mixed"]["median"] / med[best_hf]["median"],
            "ratio_batch1": med["ours_b1"]["median"] / med["hf_b1"]["median"]}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="llama-110m")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test this script")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("engine_gpu needs a CUDA device")
    result: dict[str, Any] = {
        "command": "python -m benchmarks.engine_gpu " + " ".join(
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "out"),
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None, "cuda": torch.version.cuda,
        "environment": environment(1, args.dtype), "models": [],
        "workload": "64 requests prompt 16..512 output 16..256 (seed 0, ignore_eos); "
                    "batch 1: 128 in, 128 out",
        "hf_baseline": "generate, greedy, left padding, batches in request order",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        result["models"].append(bench_model(name, args))
        args.out.write_text(json.dumps(result, indent=1) + "\n")  # each model as it lands
        print(json.dumps({k: v for k, v in result["models"][-1].items()
                          if k.startswith("ratio")}), flush=True)


if __name__ == "__main__":
    main()
