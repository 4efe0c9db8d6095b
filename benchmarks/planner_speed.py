"""Simulator speed: 100k requests (target: under 10 s on this machine).

    PYTHONPATH=. python benchmarks/planner_speed.py

writes benchmarks/results/planner_speed.json. Two fleets sized to be near their SLO limit
(the realistic case for the search), so batches are full and queues are short.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from splitserve.planner.cost_model import RooflineLatencyModel
from splitserve.planner.fleet import Pool, TransferConfig
from splitserve.planner.hardware import get_hardware
from splitserve.planner.model_spec import load_model_spec
from splitserve.planner.results import Slo
from splitserve.planner.simulator import simulate
from splitserve.planner.workload import generate, get_workload

NUM_REQUESTS = 100_000


def main() -> None:
    hw = get_hardware("h100")
    model = RooflineLatencyModel(load_model_spec("llama-3-70b"), hw, 4)
    requests = generate(get_workload("chat"), rate=20.0, num_requests=NUM_REQUESTS, seed=0)
    slo = Slo(2.0, 0.1)
    fleets = {
        "colocated 4x TP4": ([Pool("mixed", 4, model)], None),
        "2P3D TP4": (
            [Pool("prefill", 2, model), Pool("decode", 3, model)],
            TransferConfig(hw.network_bw_bytes_s, hw.network_latency_s),
        ),
    }
    runs = []
    for name, (pools, transfer) in fleets.items():
        start = time.perf_counter()
        result = simulate(requests, pools, transfer=transfer)
        wall_s = time.perf_counter() - start
        runs.append(
            {
                "fleet": name,
                "wall_s": wall_s,
                "num_steps": result.num_steps,
                "requests_per_s": NUM_REQUESTS / wall_s,
                **result.summary(slo),
            }
        )
        print(
            f"{name}: {NUM_REQUESTS} requests, {result.num_steps} steps in {wall_s:.2f} s "
            f"(attainment {result.attainment(slo):.3f})"
        )
    out = Path(__file__).parent / "results" / "planner_speed.json"
    out.write_text(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "model": "llama-3-70b",
                "hardware": hw.name,
                "workload": "chat @ 20 req/s",
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
