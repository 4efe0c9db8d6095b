"""The seed's scenario: a 70B model on H100s serving search (long prompts, short answers).

Question: does splitting prefill from decode save the claimed 30-40%, and where does the
saving vanish? For each point the planner finds the cheapest colocated fleet (trying the
chunked-prefill token budgets 256 / 512 / 1024 / 2048, so the baseline is tuned too) and the
cheapest xPyD split (TP 2 / 4 / 8 per role), at a fixed arrival rate. The colocated fleet
without chunked prefill (the baseline DistServe and Splitwise report against) is sized too.

Sweeps: the TPOT SLO (TTFT fixed), the TTFT SLO (TPOT fixed), and the prompt length.

    PYTHONPATH=. python benchmarks/planner_70b_search.py

writes benchmarks/results/planner_70b_search.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from splitserve.planner.cost_model import Efficiency
from splitserve.planner.fleet import SchedulerConfig
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.results import Slo
from splitserve.planner.search import (
    Evaluator,
    PlanSetup,
    best_colocated,
    best_disaggregated,
)
from splitserve.planner.workload import LengthDist, WorkloadSpec, generate

RATE = 40.0
NUM_REQUESTS = 2000
BUDGETS = (256, 512, 1024, 2048)
BASE_SLO = Slo(ttft_s=2.0, tpot_s=0.05, attainment=0.9)
SEARCH_IN, SEARCH_OUT = 4096, 192


def search_workload(input_len: int, output_len: int = SEARCH_OUT) -> WorkloadSpec:
    return WorkloadSpec(
        f"search-{input_len}",
        ((1.0, LengthDist(input_len, 0.4, 16384), LengthDist(output_len, 0.6, 2048)),),
    )


def point(setup: PlanSetup, input_len: int) -> dict[str, Any]:
    requests = generate(search_workload(input_len), RATE, NUM_REQUESTS, seed=0)
    colo = best_colocated(Evaluator(setup), requests)  # tries every budget in BUDGETS
    # The baseline DistServe and Splitwise measured against: no chunking, prompts first.
    unchunked = best_colocated(
        Evaluator(replace(setup, scheduler=SchedulerConfig(chunked_prefill=False))), requests
    )
    split = best_disaggregated(Evaluator(setup), requests)
    out: dict[str, Any] = {
        "input_len": input_len,
        "ttft_s": setup.slo.ttft_s,
        "tpot_s": setup.slo.tpot_s,
        "colocated": None if colo is None else colo.label(),
        "colocated_token_budget": None if colo is None else colo.token_budget,
        "colocated_gpus": None if colo is None else colo.num_gpus,
        "colocated_unchunked_gpus": None if unchunked is None else unchunked.num_gpus,
        "split": None if split is None else split.label(),
        "split_gpus": None if split is None else split.num_gpus,
    }
    if colo and split:
        out["saving"] = 1 - split.num_gpus / colo.num_gpus
    if unchunked and split:
        out["saving_vs_unchunked"] = 1 - split.num_gpus / unchunked.num_gpus
    print(
        f"in={input_len:5d} ttft={setup.slo.ttft_s:4.1f} tpot={setup.slo.tpot_s:5.3f}  "
        f"colo={out['colocated']} [{out['colocated_token_budget']}]  split={out['split']}  "
        f"saving={out.get('saving', float('nan')):.0%}  "
        f"unchunked={out['colocated_unchunked_gpus']} GPUs "
        f"(saving {out.get('saving_vs_unchunked', float('nan')):.0%})",
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--compute-half-tokens",
        type=float,
        default=0.0,
        help="small-GEMM penalty (Efficiency.compute_half_tokens); 0 = plain roofline",
    )
    parser.add_argument("--out", default="planner_70b_search.json")
    args = parser.parse_args()
    start = time.perf_counter()
    hw = get_hardware("h100")
    setup = PlanSetup(
        model=load_model_spec("llama-3-70b"),
        hardware=hw,
        slo=BASE_SLO,
        colocated_token_budgets=BUDGETS,
        efficiency=Efficiency(compute_half_tokens=args.compute_half_tokens),
        kv_link="network",
        tp_options=(2, 4, 8),
    )
    tpot_sweep = [
        point(replace(setup, slo=replace(BASE_SLO, tpot_s=t)), SEARCH_IN)
        for t in (0.025, 0.03, 0.04, 0.05, 0.07, 0.1, 0.2)
    ]
    ttft_sweep = [
        point(replace(setup, slo=replace(BASE_SLO, ttft_s=t)), SEARCH_IN)
        for t in (0.8, 1.2, 2.0, 4.0, 8.0)
    ]
    length_sweep = [point(setup, n) for n in (256, 512, 1024, 2048, 4096, 8192)]
    result = {
        "model": "llama-3-70b (splitserve/planner/configs/llama-3-70b.json)",
        "hardware": hw.name,
        "price_per_gpu_hour": hw.price_per_hour,
        "rate_rps": RATE,
        "num_requests_per_simulation": NUM_REQUESTS,
        "workload": f"search: log-normal prompts (sigma 0.4) around the stated mean, "
        f"outputs around {SEARCH_OUT} (sigma 0.6), Poisson arrivals",
        "base_slo": vars(BASE_SLO),
        "efficiency": vars(setup.efficiency),
        "kv_link": "network (one 400 Gb/s NIC per GPU), no layer overlap",
        "tpot_sweep": tpot_sweep,
        "ttft_sweep": ttft_sweep,
        "prompt_length_sweep": length_sweep,
        "wall_s": time.perf_counter() - start,
    }
    out = Path(__file__).parent / "results" / args.out
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
