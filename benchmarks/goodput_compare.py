"""Goodput of disaggregated (1 prefill + 1 decode worker) against colocated (2 mixed
workers) serving on the same 2 cores, on the bench presets and on scaled replays of the
Azure LLM 2023 code and conversation traces. Writes benchmarks/results/goodput_<scenario>/
(compare.json, per-run JSONL + summaries, PNG plots) and benchmarks/results/goodput_compare.json
(the headline numbers of every scenario).

    PYTHONPATH=. python -m benchmarks.goodput_compare            # ~20-25 min here
    PYTHONPATH=. python -m benchmarks.goodput_compare --only mixed-long

Model: random-weight llama-110m layers with an 8k vocabulary, in bfloat16
(benchmarks/goodput_prefill.py measures why: a 1,500-token prefill takes several seconds
on one core here, and bfloat16 was faster than float32 in both prefill and decode). Lengths are divided by LENGTH_SCALE (16) so this machine can serve
them; the router's short-prompt threshold (prompts prefilled on the decode worker) is
scaled the same way (64 / 16 = 4 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.goodput_prefill import MODEL_NAME, bench_model
from splitserve.bench import report
from splitserve.bench.arrivals import TraceScaling
from splitserve.bench.compare import (
    CompareConfig,
    Topology,
    format_comparison,
    gap_stats,
    run_compare,
)
from splitserve.bench.compare_plots import replot, run_name
from splitserve.bench.runner import BenchConfig
from splitserve.bench.stats import SLO
from splitserve.bench.workloads import get_workload

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# ../shared/traces next to the main checkout; a worktree sits one level deeper
TRACE_DIRS = (REPO.parent / "shared" / "traces", REPO.parent.parent / "shared" / "traces")
TRACES = next((d for d in TRACE_DIRS if d.is_dir()), TRACE_DIRS[0])
LENGTH_SCALE = 4  # was 16 before the engine speed-ups made this workload too light
DTYPE = "bfloat16"  # faster than float32 here in prefill and decode (goodput_prefill.json)
CORES = (0, 1)
TOPOLOGIES = (Topology.parse("2m"), Topology.parse("1p1d"))
# prefix caching off: every rate replays the same seeded prompts on the same cluster
WORKER_ARGS = ("--dtype=bfloat16", "--num-blocks=2048", "--max-num-batched-tokens=512",
               "--no-enable-prefix-caching")
ROUTER_ARGS = (f"--short-prompt-len={64 // LENGTH_SCALE}",)
# A TTFT-bound SLO, a TPOT-bound SLO and both (DistServe's attainment), in seconds,
# sized to this machine's scaled workload (a decode step alone is ~30 ms here).
SLOS = {"ttft": SLO(ttft_s=2.0), "tpot": SLO(tpot_s=0.1), "both": SLO(ttft_s=2.0, tpot_s=0.1)}


@dataclass(frozen=True)
class Scenario:
    name: str
    rates: tuple[float, ...] = ()
    workload: str = "chat"
    trace: TraceScaling | None = None
    num_requests: int = 80


def scenarios() -> list[Scenario]:
    def trace(file: str, duration_s: float, speed: float) -> TraceScaling:
        return TraceScaling(str(TRACES / file), 0.0, duration_s, LENGTH_SCALE, speed)

    return [
        Scenario("mixed-long", (1.0, 2.0, 4.0, 6.0), "mixed-long"),
        Scenario("chat", (2.0, 4.0, 6.0), "chat"),
        Scenario("code", (2.0, 5.0), "code"),
        Scenario("summarize", (1.0, 2.0), "summarize"),
        # the code trace's first 120 s hold 63 requests within ~40 s (prompts ~2,300
        # tokens -> ~147 scaled, ~2 output tokens): prefill-heavy
        Scenario("azure-code", trace=trace("azure_llm_2023_code.csv", 120.0, 1.0)),
        # the conversation trace: ~3.2 req/s, ~900 -> 57 input, ~230 -> 15 output tokens
        Scenario("azure-conv", trace=trace("azure_llm_2023_conv.csv", 30.0, 1.0)),
    ]


def headline(comparison: dict[str, Any]) -> dict[str, Any]:
    """Per topology and run: the numbers the docs quote."""
    out: dict[str, Any] = {"goodput_rps": comparison["goodput_rps"], "runs": {}}
    for name, runs in comparison["runs"].items():
        out["runs"][name] = [{
            "rate_rps": s["rate_rps"], "sent": s["sent"], "completed": s["completed"],
            "failed": s["failed"],
            "ttft_p50_s": s["ttft_s"]["p50"], "ttft_p99_s": s["ttft_s"]["p99"],
            "tpot_p50_s": s["tpot_s"]["p50"], "tpot_p99_s": s["tpot_s"]["p99"],
            "itl_p50_s": s["itl_s"]["p50"], "itl_p99_s": s["itl_s"]["p99"],
            "itl_p99_over_p50": (s["itl_s"]["p99"] / s["itl_s"]["p50"]
                                 if s["itl_s"]["p50"] else None),
            "first_itl_p50_s": (s.get("first_itl_s") or {}).get("p50"),
            "itl_after_first_p50_s": (s.get("itl_after_first_s") or {}).get("p50"),
            "itl_after_first_p99_s": (s.get("itl_after_first_s") or {}).get("p99"),
            "attainment": s["attainment_by_slo"],
        } for s in runs]
    out["loadavg_before"] = comparison["loadavg_before"]
    out["loadavg_after"] = comparison["loadavg_after"]
    out["wall_s"] = comparison["wall_s"]
    return out


def enrich(path: Path) -> None:
    """Add the first-gap / later-gap ITL split to a stored compare.json (results recorded
    before the split existed) and refresh the scenario's headline."""
    comparison = json.loads(path.read_text())
    for name, runs in comparison["runs"].items():
        for s in runs:
            records = report.read_records(str(path.parent / name / f"{run_name(s)}.jsonl"))
            s.update(gap_stats(records))
    report.write_json(str(path), comparison)
    summary_path = RESULTS / "goodput_compare.json"
    if summary_path.exists():
        combined = json.loads(summary_path.read_text())
        combined["scenarios"][path.parent.name.removeprefix("goodput_")] = headline(comparison)
        report.write_json(str(summary_path), combined)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--max-per-topology", type=float, default=200.0,
                        help="start no new run on a cluster after S seconds of it")
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables of the stored results and redraw their "
                             "plots; run nothing")
    args = parser.parse_args()
    if args.report_only:
        for sc in scenarios():
            path = RESULTS / f"goodput_{sc.name}" / "compare.json"
            if path.exists():
                enrich(path)
                replot(str(path.parent))
                print(f"== {sc.name}\n{format_comparison(json.loads(path.read_text()))}\n")
        return
    model_dir = str(bench_model(DTYPE))
    chosen = [s for s in scenarios() if args.only is None or s.name in args.only]
    summary_path = RESULTS / "goodput_compare.json"
    combined: dict[str, Any] = (json.loads(summary_path.read_text())
                                if summary_path.exists() and args.only else {})
    combined.update({"model": f"{MODEL_NAME} random weights, {DTYPE}", "cores": list(CORES),
                     "topologies": [t.label for t in TOPOLOGIES], "length_scale": LENGTH_SCALE,
                     "worker_args": list(WORKER_ARGS), "router_args": list(ROUTER_ARGS),
                     "slos": {k: vars(v) for k, v in SLOS.items()}})
    combined.setdefault("scenarios", {})
    started = time.monotonic()
    for sc in chosen:
        bench = BenchConfig(
            url="http://127.0.0.1:0", tokenizer_dir=model_dir,
            workload=get_workload(sc.workload), arrival="trace" if sc.trace else "poisson",
            trace=sc.trace, num_requests=sc.num_requests,
            duration_s=45.0 if sc.trace else 25.0, timeout_s=90.0,
            length_scale=1.0 if sc.trace else LENGTH_SCALE, seed=0)
        config = CompareConfig(
            model_dir=model_dir, bench=bench, topologies=TOPOLOGIES, rates=sc.rates,
            slos=SLOS, cores=CORES, worker_args=WORKER_ARGS, router_args=ROUTER_ARGS,
            max_per_topology_s=args.max_per_topology, out_dir=str(RESULTS / f"goodput_{sc.name}"))
        print(f"== {sc.name} (load average {os.getloadavg()[0]:.2f})", flush=True)
        comparison = run_compare(config)
        print(format_comparison(comparison), flush=True)
        combined["scenarios"][sc.name] = headline(comparison)
        summary_path.write_text(json.dumps(combined, indent=2) + "\n")
    print(f"all done in {time.monotonic() - started:.0f} s; wrote {summary_path}")


if __name__ == "__main__":
    main()
