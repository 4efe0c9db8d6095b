"""Prefill time of one long prompt on one core, float32 against bfloat16, for the goodput
comparison's model (random-weight llama-110m layers, 8k vocabulary): picks the dtype and checks that a long
prompt's prefill takes >= 0.5 s here (so a colocated decode stream visibly stalls).

    PYTHONPATH=. python -m benchmarks.goodput_prefill   # writes results/goodput_prefill.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_models import SIZES, make_bench_model

RESULTS = Path(__file__).resolve().parent / "results" / "goodput_prefill.json"
# llama-110m's layers with the vocabulary cut to its tokenizer's 8,192 tokens: with the
# stock 32,000-row head a greedy random model mostly emits ids the tokenizer cannot
# decode (text ""), and streams carry no text to time. ~92M parameters.
MODEL_NAME = "llama-110m-v8k"
SIZES.setdefault(MODEL_NAME, {**SIZES["llama-110m"], "vocab_size": 8192})


def bench_model(dtype: str = "float32") -> Path:
    """The goodput benchmarks' model folder (built once under benchmarks/.models/)."""
    return make_bench_model(MODEL_NAME, dtype=dtype)


def time_prefill(model_dir: str, dtype: str, prompt_len: int, chunk_len: int,
                 num_repeats: int) -> dict[str, Any]:
    """Seconds to prefill `prompt_len` tokens (1 output token), and one decode step."""
    from splitserve.engine.llm import LLM
    from splitserve.engine.sampling_params import SamplingParams

    llm = LLM(model_dir, dtype=dtype, num_threads=1, max_num_batched_tokens=chunk_len,
              enable_prefix_caching=False, num_blocks=512)
    prompt = [(7 * i) % 8000 + 2 for i in range(prompt_len)]
    llm.generate([prompt[:64]], SamplingParams(max_tokens=2, temperature=0))  # warm-up
    prefill_s, decode_s = [], []
    for _ in range(num_repeats):
        t0 = time.perf_counter()
        llm.generate([prompt], SamplingParams(max_tokens=1, temperature=0))
        prefill_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        llm.generate([prompt[:16]], SamplingParams(max_tokens=33, temperature=0))
        decode_s.append((time.perf_counter() - t0) / 33)
    return {"prefill_s_median": statistics.median(prefill_s), "prefill_s": prefill_s,
            "decode_step_s_median": statistics.median(decode_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-len", type=int, default=1500)
    parser.add_argument("--chunk-len", type=int, default=512, help="engine token budget")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--core", type=int, default=0)
    args = parser.parse_args()
    os.sched_setaffinity(0, [args.core])
    out: dict[str, object] = {"model": f"{MODEL_NAME} (random weights)", "core": args.core,
                              "prompt_len": args.prompt_len, "chunk_len": args.chunk_len,
                              "loadavg_before": list(os.getloadavg())}
    for dtype in ("float32", "bfloat16"):
        model_dir = bench_model(dtype)
        out[dtype] = time_prefill(str(model_dir), dtype, args.prompt_len, args.chunk_len,
                                  args.repeats)
        print(dtype, json.dumps(out[dtype]), flush=True)
    out["loadavg_after"] = list(os.getloadavg())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
