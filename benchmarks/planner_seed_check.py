"""Is the calibration's judged workload (seed 0) cheaper per prompt step than the gauges'?

The eleventh calibration measurement's gauges ran prompt steps 6-16% slower than the judged
1P1D runs right after them (docs/planner.md, "Eleventh measurement"). This check runs the
judged workload and gauge seeds alternately on one 1P1D cluster at one rate, and reads
each run's prompt and decode factors: its workers' measured step seconds over a bare
replay of its own requests (the calibration's profile). A seed effect would show as seed
0's factors below the others' in every round.

    PYTHONPATH=. python benchmarks/planner_seed_check.py --rate 4 \\
        --runs 0:20,1706:20,1707:20 --rounds 3 --lock LOCKFILE   # ~4 min
    PYTHONPATH=. python benchmarks/planner_seed_check.py --analyse RAW.json.gz

`--runs` is seed:duration_s pairs; the profile is the one of
`benchmarks/results/planner_calibration_m11_raw.json.gz` (measured on this machine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.calibration import measure, replay, step_metrics, variants
from benchmarks.calibration.rawfile import (
    cpu_lock,
    dump_json,
    load_json,
    read_raw,
    setup_from_dict,
)
from benchmarks.calibration.setup import Setup

RESULTS = Path(__file__).parent / "results"
PROFILE_FROM = RESULTS / "planner_calibration_m11_raw.json.gz"


def measure_runs(rate: float, runs: list[tuple[int, float]], rounds: int,
                 lock: str | None) -> dict[str, Any]:
    from splitserve.bench import SLO, BenchConfig
    from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port

    raw = read_raw(PROFILE_FROM)
    setup = Setup()
    model_dir = setup.model_dir()
    spec = ClusterSpec(model_dir=str(model_dir), num_prefill=1, num_decode=1, num_mixed=0,
                       router_port=free_port(), log_dir="/tmp/planner-seed-check",
                       worker_args=setup.worker_args(), router_args=setup.router_args())
    base = dict(tokenizer_dir=str(model_dir), workload=setup.make_workload(),
                timeout_s=120.0, length_scale=setup.length_scale, slo=SLO(*setup.slo))
    out = []
    with Cluster(spec) as cluster, cpu_lock(lock):
        pids = {c.name: c.proc.pid for c in cluster.children}
        measure._bench(cluster, pids, BenchConfig(url=cluster.url, **{
            **base, "num_requests": 6, "rate_rps": 4.0, "seed": 99}))
        for k in range(rounds):
            for seed, duration_s in runs:
                config = BenchConfig(url=cluster.url, **base, rate_rps=rate,
                                     num_requests=setup.num_requests, duration_s=duration_s,
                                     seed=seed)
                out.append({"round": k, "seed": seed, "duration_s_asked": duration_s,
                            **measure._bench(cluster, pids, config)})
    return {"setup": raw["setup"], "profile": raw["profile"], "rate_rps": rate, "runs": out}


def analyse(raw: dict[str, Any]) -> list[dict[str, Any]]:
    setup = setup_from_dict(raw["setup"])
    rows = []
    for run in raw["runs"]:
        sim = replay.replay(setup, "1P1D", run["records"], raw["profile"],
                            variants.DEFAULT_LINK, routing="polled", chunk_prefill_role=True)
        real = step_metrics.measured(run)
        assert real is not None, "runs without step metrics"
        tokens = sum(r["output_len"] or 0 for r in run["records"] if r["success"])
        rows.append({"round": run.get("round"), "seed": run["seed"],
                     "duration_s": round(run["duration_s"], 1),
                     "prompt_factor": step_metrics.prompt_factor(real, sim),
                     "decode_factor": step_metrics.decode_factor(real, sim),
                     "output_tokens_per_s": round(tokens / run["duration_s"], 1),
                     "foreign_cpu_s": run["foreign_cpu_s"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--runs", default="0:20,1706:20,1707:20",
                    help="seed:duration_s pairs, run in this order every round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lock", default=None, help="CPU lock file held while measuring")
    ap.add_argument("--analyse", default=None, help="a raw file of an earlier check")
    ap.add_argument("--out", default=str(RESULTS / "planner_seed_check.json"))
    args = ap.parse_args()
    if args.analyse:
        raw = load_json(args.analyse)
    else:
        pairs = [(int(s), float(d)) for s, d in (p.split(":") for p in args.runs.split(","))]
        raw = measure_runs(args.rate, pairs, args.rounds, args.lock)
        dump_json(Path(args.out).with_name(Path(args.out).stem + "_raw.json.gz"), raw, default=str)
    rows = analyse(raw)
    for r in rows:
        print(f"round {r['round']} seed {r['seed']:>5} {r['duration_s']:5.1f} s: prompt "
              f"factor {r['prompt_factor']:.3f}, decode factor {r['decode_factor']:.3f}, "
              f"{r['output_tokens_per_s']:.0f} tokens/s")
    out = {"rate_rps": raw["rate_rps"], "note": raw.get("note"), "runs": rows}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
