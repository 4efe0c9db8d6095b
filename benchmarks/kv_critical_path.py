"""What the KV handoff adds to a request's critical path (issue 3's second benchmark).

For 512- and 2048-token prompts, one request at a time: the gap between the first and the
second streamed token in 1P1D (where the KV moves from the prefill to the decode worker
in between) minus the same gap colocated (one mixed worker), as a fraction of the prefill
time (colocated TTFT). Each engine gets one core in both topologies.

    python -m benchmarks.kv_critical_path [--model DIR] [--repeats 3]
writes benchmarks/results/kv_critical_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port

RESULTS = Path(__file__).resolve().parent / "results" / "kv_critical_path.json"


def stream_gaps(url: str, model: str, prompt_ids: list[int]) -> dict[str, Any]:
    """TTFT and first inter-token gap of one streamed 3-token request, plus the timeline."""
    body = {"model": model, "prompt": prompt_ids, "max_tokens": 3, "temperature": 0,
            "ignore_eos": True, "stream": True}
    times: list[float] = []
    start = time.perf_counter()
    timeline: dict[str, object] = {}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=300,
                      headers={"X-Splitserve-Debug": "1"}) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith(": timeline"):
                timeline = json.loads(line.split(" ", 2)[2])
            if line.startswith("data: {") and '"text"' in line:
                times.append(time.perf_counter() - start)
    if len(times) < 2:
        raise RuntimeError(f"expected >= 2 token chunks, got {len(times)}")
    return {"ttft_s": times[0], "gap_s": times[1] - times[0], "timeline": timeline}


def measure(model_dir: str, topology: dict[str, Any], prompt_lens: list[int], repeats: int,
            worker_args: tuple[str, ...]) -> dict[int, list[dict[str, Any]]]:
    spec = ClusterSpec(model_dir=model_dir, router_port=free_port(), cores=(0, 1),
                       worker_args=worker_args,
                       router_args=("--short-prompt-len", "0"), **topology)
    out: dict[int, list[dict[str, Any]]] = {}
    with Cluster(spec) as cluster:
        name = httpx.get(f"{cluster.url}/v1/models").json()["data"][0]["id"]
        stream_gaps(cluster.url, name, list(range(100, 164)))  # warm-up
        for n in prompt_lens:
            # distinct prompts: no prefix-cache hit may shorten a prefill
            out[n] = [stream_gaps(cluster.url, name, [(7 * r + 13 * i) % 7000 + 200
                                                      for i in range(n)])
                      for r in range(repeats)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="default: benchmarks llama-110m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompt-lens", default="512,2048")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from benchmarks.bench_models import make_bench_model

        model = str(make_bench_model("llama-110m"))
    lens = [int(x) for x in args.prompt_lens.split(",")]
    worker_args = (f"--dtype={args.dtype}", "--max-num-batched-tokens=2048",
                   "--kv-cache-bytes=2000000000")
    load_before = os.getloadavg()
    # one core per engine in both: colocated = 1 mixed worker on core 0
    colo = measure(model, {"num_prefill": 0, "num_decode": 0, "num_mixed": 1}, lens,
                   args.repeats, worker_args)
    disagg = measure(model, {"num_prefill": 1, "num_decode": 1}, lens, args.repeats,
                     worker_args)
    rows = []
    for n in lens:
        prefill_s = statistics.median(r["ttft_s"] for r in colo[n])
        gap_colo = statistics.median(r["gap_s"] for r in colo[n])
        gap_dis = statistics.median(r["gap_s"] for r in disagg[n])
        kv_s = [w.get("kv_transfer_s") for r in disagg[n]
                for w in r["timeline"].get("worker_timelines", {}).values()
                if isinstance(w, dict)]
        rows.append({
            "prompt_len": n, "prefill_s_colocated": prefill_s,
            "second_token_gap_s_colocated": gap_colo,
            "second_token_gap_s_1p1d": gap_dis,
            "extra_delay_s": gap_dis - gap_colo,
            "extra_delay_fraction_of_prefill": (gap_dis - gap_colo) / prefill_s,
            "kv_transfer_s_reported": [k for k in kv_s if k is not None],
            "ttft_s_1p1d": statistics.median(r["ttft_s"] for r in disagg[n]),
        })
        print(f"prompt {n:5d}: prefill {prefill_s:6.3f} s | 2nd-token gap colocated "
              f"{1000 * gap_colo:7.1f} ms, 1P1D {1000 * gap_dis:7.1f} ms | extra "
              f"{100 * rows[-1]['extra_delay_fraction_of_prefill']:5.2f}% of prefill")
    result = {"benchmark": "kv_critical_path", "model": model, "dtype": args.dtype,
              "repeats": args.repeats, "transport": "tcp", "cores": "1 per engine",
              "target": "extra delay <= 10% of prefill time", "rows": rows,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
