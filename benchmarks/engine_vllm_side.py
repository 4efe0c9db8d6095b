"""vLLM-CPU's side of `engine_vs_vllm`: run by the vLLM venv's python, never imported here.

    $VLLM_PYTHON benchmarks/engine_vllm_side.py SPEC.json OUT.json

SPEC: {"model": dir, "dtype": ..., "reps": n, "workloads": {name: [[prompt ids, max_tokens],
...]}}. OUT: {"version": ..., "tokens_per_s": {name: [per rep]}, "load_s": ...}.
Standalone on purpose (no splitserve import): the vLLM venv does not have it.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    start = time.perf_counter()
    import vllm
    from vllm import LLM, SamplingParams

    # Prefix caching off, as on our side: every rep replays the same prompts, and with it on
    # vLLM's second rep would skip the prefills it cached in the first (measured: mixed64
    # 589 -> 710 tok/s, a 32 x 512-token prefill 4.2 s -> 1.0 s).
    llm = LLM(model=spec["model"], dtype=spec["dtype"], max_model_len=2048,
              max_num_seqs=64, seed=0, enable_prefix_caching=False)
    load_s = time.perf_counter() - start
    warm = [{"prompt_token_ids": list(range(2, 34))}] * 2
    llm.generate(warm, SamplingParams(max_tokens=8, ignore_eos=True, temperature=0.0),
                 use_tqdm=False)
    result: dict[str, dict[str, list[float]]] = {"tokens_per_s": {}}
    for rep in range(spec["reps"]):
        for name, reqs in spec["workloads"].items():
            prompts = [{"prompt_token_ids": ids} for ids, _ in reqs]
            params = [SamplingParams(max_tokens=n, ignore_eos=True, temperature=0.0)
                      for _, n in reqs]
            t = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            elapsed = time.perf_counter() - t
            got = sum(len(o.outputs[0].token_ids) for o in outs)
            want = sum(n for _, n in reqs)
            if got != want:
                raise RuntimeError(f"vLLM produced {got} tokens for {name}, asked for {want}")
            result["tokens_per_s"].setdefault(name, []).append(want / elapsed)
            print(f"vllm rep {rep} {name}: {want / elapsed:.1f} tok/s", flush=True)
    out = {"version": vllm.__version__, "load_s": load_s, **result}
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
