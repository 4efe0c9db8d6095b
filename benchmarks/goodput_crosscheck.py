"""Cross-check `splitserve bench` against a client nobody here wrote (inference-perf 0.7.0)
on the same server and workload: their TTFT and ITL should agree within 10%.

inference-perf lives in its own virtual environment outside the repository
(/work/shared/peers.md):

    "$(pyenv root)/versions/3.12.1/bin/python" -m venv /tmp/ip-venv
    /tmp/ip-venv/bin/pip install inference-perf
    PYTHONPATH=. python -m benchmarks.goodput_crosscheck --inference-perf /tmp/ip-venv/bin/inference-perf

It starts one 1P1D cluster (llama-110m-v8k bfloat16, cores 0,1), then per round
(`--rounds`) runs our bench and inference-perf at the same constant rate with fixed
lengths: one after the other (writes benchmarks/results/goodput_crosscheck.json), or with
`--concurrent` both at once, so both see the same server conditions on this shared
machine (writes goodput_crosscheck_concurrent.json). inference-perf sends random text; its prompt
length is set so that the server's `usage.prompt_tokens` matches ours (checked and
recorded), and `ignore_eos` fixes the output length.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.goodput_prefill import MODEL_NAME, bench_model
from splitserve.bench.compare import router_counters
from splitserve.bench.runner import BenchConfig, run_bench
from splitserve.bench.workloads import LengthDist, Workload
from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port

RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKER_ARGS = ("--dtype=bfloat16", "--num-blocks=2048", "--no-enable-prefix-caching")


def ours(url: str, model_dir: str, args: argparse.Namespace) -> dict[str, Any]:
    workload = Workload("fixed", LengthDist("fixed", args.input_len),
                        LengthDist("fixed", args.output_len), description="fixed lengths")
    result = run_bench(BenchConfig(
        url=url, tokenizer_dir=model_dir, workload=workload, arrival="constant",
        rate_rps=args.rate, num_requests=args.num_requests, timeout_s=120.0, label="ours"))
    s = result.summary
    prompt_tokens = [r.input_len for r in result.records if r.success]
    return {"sent": s["sent"], "completed": s["completed"], "failed": s["failed"],
            "ttft_s": s["ttft_s"], "itl_s": s["itl_s"], "tpot_s": s["tpot_s"],
            "mean_prompt_tokens": statistics.mean(prompt_tokens) if prompt_tokens else None}


def start_theirs(url: str, model_dir: str, args: argparse.Namespace,
                 work: Path) -> subprocess.Popen[str]:
    reports = work / "reports"
    config = {
        "load": {"type": "constant",
                 "stages": [{"rate": args.rate, "duration": args.num_requests / args.rate}]},
        "api": {"type": "completion", "streaming": True},
        "server": {"type": "vllm", "model_name": "m", "base_url": url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": model_dir},
        "data": {"type": "random",
                 "input_distribution": {"min": args.their_input_len, "max": args.their_input_len,
                                        "mean": args.their_input_len, "std_dev": 0,
                                        "total_count": args.num_requests},
                 "output_distribution": {"min": args.output_len, "max": args.output_len,
                                         "mean": args.output_len, "std_dev": 0,
                                         "total_count": args.num_requests}},
        "report": {"request_lifecycle": {"summary": True, "per_stage": False,
                                         "per_request": True}},
        "storage": {"local_storage": {"path": str(reports)}},
    }
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([args.inference_perf, "-c", str(path)], env=env, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def collect_theirs(proc: subprocess.Popen[str], args: argparse.Namespace,
                   work: Path) -> dict[str, Any]:
    reports = work / "reports"
    try:
        _, stderr = proc.communicate(timeout=args.num_requests / args.rate + 300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"inference-perf failed ({proc.returncode}):\n{stderr[-3000:]}")
    [summary_file] = glob.glob(str(reports / "**" / "summary_lifecycle_metrics.json"),
                               recursive=True)
    summary = json.loads(Path(summary_file).read_text())
    latency = summary["successes"]["latency"]
    per_request = glob.glob(str(reports / "**" / "per_request_lifecycle_metrics.json"),
                            recursive=True)
    prompt_tokens = None
    if per_request:
        rows = json.loads(Path(per_request[0]).read_text())
        counts = [r.get("info", {}).get("request_metrics", {}).get("text", {}).get("input_tokens")
                  for r in rows]
        counts = [c for c in counts if c]
        prompt_tokens = statistics.mean(counts) if counts else None
    return {"completed": summary["successes"]["count"],
            "failed": summary.get("failures", {}).get("count"),
            "ttft_s": latency["time_to_first_token"], "itl_s": latency["inter_token_latency"],
            "tpot_s": latency["time_per_output_token"], "mean_prompt_tokens": prompt_tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inference-perf", default="/tmp/ip-venv/bin/inference-perf")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--num-requests", type=int, default=30)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--their-input-len", type=int, default=None,
                        help="inference-perf's random-text length (default: --input-len)")
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrent", action="store_true",
                        help="run both clients at once (each at --rate) instead of in turn")
    parser.add_argument("--their-startup-s", type=float, default=6.0)
    args = parser.parse_args()
    args.their_input_len = args.their_input_len or args.input_len
    model_dir = str(bench_model("bfloat16"))
    spec = ClusterSpec(model_dir=model_dir, num_prefill=1, num_decode=1, cores=(0, 1),
                       router_port=free_port(), worker_args=WORKER_ARGS,
                       # 64-token prompts would otherwise be prefilled on the decode worker
                       router_args=("--served-model-name=m", "--short-prompt-len=4"))
    out: dict[str, Any] = {"client": "inference-perf 0.7.0", "model": f"{MODEL_NAME} bfloat16",
                           "topology": "1P1D on cores 0,1", "rate_rps": args.rate,
                           "num_requests": args.num_requests, "input_len": args.input_len,
                           "their_input_len": args.their_input_len,
                           "output_len": args.output_len, "rounds": [],
                           "mode": "concurrent" if args.concurrent else "alternating",
                           "loadavg_before": list(os.getloadavg())}
    with Cluster(spec) as cluster, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            work = Path(tmp) / f"round{i}"
            if args.concurrent:  # both clients in the same window: same server conditions
                proc = start_theirs(cluster.url, model_dir, args, work)
                time.sleep(args.their_startup_s)  # its imports and tokenizer load
                a = ours(cluster.url, model_dir, args)
                b = collect_theirs(proc, args, work)
            else:
                a = ours(cluster.url, model_dir, args)
                b = collect_theirs(start_theirs(cluster.url, model_dir, args, work), args, work)
            out["rounds"].append({"ours": a, "inference_perf": b})
            print(json.dumps(out["rounds"][-1]), flush=True)
        out["router_counters"] = router_counters(cluster.url)
    out["loadavg_after"] = list(os.getloadavg())

    def pooled(side: str, metric: str, stat: str) -> float:
        return statistics.mean(r[side][metric][stat] for r in out["rounds"])

    out["agreement"] = {}
    for metric in ("ttft_s", "itl_s"):
        for stat, their_stat in (("mean", "mean"), ("p50", "median")):
            mine = pooled("ours", metric, stat)
            theirs = pooled("inference_perf", metric, their_stat)
            out["agreement"][f"{metric}_{stat}"] = {
                "ours": mine, "inference_perf": theirs, "rel_diff": abs(mine - theirs) / theirs,
                "within_10pct": abs(mine - theirs) / theirs <= 0.10}
    results = RESULTS_DIR / ("goodput_crosscheck_concurrent.json" if args.concurrent
                             else "goodput_crosscheck.json")
    results.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["agreement"], indent=2))
    print(f"wrote {results}")


if __name__ == "__main__":
    main()
