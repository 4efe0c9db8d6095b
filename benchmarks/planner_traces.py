"""Production traces at full scale, unscaled: colocated vs the best split.

Reads ../shared/traces/ (Azure LLM 2023 conversation and code, Mooncake FAST'25
conversation with prefix-cache hits from its hash_ids), never a vendored copy.

    PYTHONPATH=. python benchmarks/planner_traces.py [--model llama-3-70b] [--hardware h100]

writes benchmarks/results/planner_traces.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.plan import run_plan
from splitserve.planner.results import Slo
from splitserve.planner.search import PlanSetup
from splitserve.planner.workload import TRACE_FILES, load_trace, resolve_trace

SLOS = {
    "azure-conv": Slo(2.0, 0.1, 0.9),
    "azure-code": Slo(2.0, 0.1, 0.9),
    "mooncake": Slo(10.0, 0.1, 0.9),  # 12k-token mean prompts: a looser TTFT
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llama-3-70b")
    parser.add_argument("--hardware", default="h100")
    parser.add_argument("--traces", default=",".join(TRACE_FILES))
    args = parser.parse_args()
    model, hw = load_model_spec(args.model), get_hardware(args.hardware)
    plans = []
    for name in args.traces.split(","):
        start = time.perf_counter()
        requests = load_trace(resolve_trace(name))
        setup = PlanSetup(model=model, hardware=hw, slo=SLOS[name], tp_options=(2, 4, 8))
        plan = run_plan(setup, requests, with_goodput=False)
        plan["trace"] = name
        plan["wall_s"] = time.perf_counter() - start
        plans.append(plan)
        colo, split = plan["colocated"], plan["disaggregated"]
        print(
            f"{name}: {len(requests)} requests at {requests.rate:.2f} req/s: "
            f"colocated {colo and colo['layout']}, split {split and split['layout']}: "
            f"{plan['recommendation']} ({plan['wall_s']:.0f} s)",
            flush=True,
        )
    out = Path(__file__).parent / "results" / "planner_traces.json"
    out.write_text(json.dumps({"model": args.model, "plans": plans}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
