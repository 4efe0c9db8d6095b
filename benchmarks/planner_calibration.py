"""How far is the planner's simulator from our real engine on this machine?

1. Profile: `profile_engine` (what `splitserve profile` runs) times the model's prefill
   and decode steps on one pinned core with one torch thread: what each worker gets.
2. Measure, per topology (1P1D, 2 mixed; one core per worker), on one real cluster: a
   calibration probe (lone requests, bursts of 4 and 8, Poisson 3, 5 and 7 req/s for
   20 s each; its own seeds), then the goodput benchmark's runs (chat workload / 4,
   Poisson 2, 4, 6 req/s, 45 s of arrivals each, seed 0, prefix caching off), each made
   three times. Every request carries the router's debug header (its record holds the
   router's and the worker engine's timeline) and every inter-token gap; every run
   records the CPU other people's processes used meanwhile (calibration/snapshot.py).
3. Fit on the probe only, per variant (calibration/variants.py): fit.py (aggregate
   fits: busy-time step scales, TPOT gaps) or fit_steps.py (terms measured where they
   happen: decode steps rebuilt from token arrivals, prompt stages or busy seconds, the
   KV handoff from the timelines, each as a line in offered load).
4. Replay every validation run's requests (lengths, actual send times) in the simulator
   and judge (calibration/pooled.py): each rate's quiet repeats pooled, beside the
   single repeats' range; p90 TTFT and p90 TPOT (target: within 10%), attainment at the
   goodput SLO and at SLOs on the measured quantiles (within 3 points).

    # in pieces of a few minutes under the lock each, then merged (docs/planner.md)
    PYTHONPATH=. python benchmarks/planner_calibration.py --topologies 1P1D \
        --lock LOCKFILE --out DIR/piece_1p1d.json
    PYTHONPATH=. python benchmarks/planner_calibration.py --topologies '2 mixed' \
        --profile-from DIR/piece_1p1d_raw.json.gz --lock LOCKFILE --out DIR/piece_mixed.json
    PYTHONPATH=. python benchmarks/planner_calibration.py --merge \
        DIR/piece_1p1d_raw.json.gz DIR/piece_mixed_raw.json.gz
    PYTHONPATH=. python benchmarks/planner_calibration.py --replay \
        benchmarks/results/planner_calibration_raw.json.gz   # re-analyse, no measuring

Each measuring phase (the profile; per topology the probe, then each rate's repeats)
holds the CPU lock on its own, for a few minutes at most. Writes --out (default
benchmarks/results/planner_calibration.json: tables, errors, fits, verdicts) and, beside
it, <out stem>_raw.json.gz (the profile and every request record, gzipped; --replay reads
it back, as it reads the plain *_raw.json of older measurements).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.calibration import (
    gauge,
    measure,
    pooled,
    replay,
    snapshot,
    step_metrics,
    steps,
    tail,
    twins,
    variants,
)
from benchmarks.calibration.presets import PRESETS
from benchmarks.calibration.rawfile import (
    cpu_lock,
    json_default,
    merge_raw,
    raw_path_for,
    read_raw,
    setup_from_dict,
    write_raw,
)
from benchmarks.calibration.report import (
    errors,
    markdown,
    repeat_markdown,
    repeatability,
    stats,
    summarize_errors,
    sweep_markdown,
    verdict,
)
from benchmarks.calibration.setup import Setup
from benchmarks.calibration.variants import DEFAULT_LINK, VARIANTS

RESULTS = Path(__file__).resolve().parent / "results"
# variants whose measured-vs-simulated step table is printed (all are in the JSON)
STEP_TABLES = ("profile", "steps_busy", "steps_metrics", "steps_metrics_gap", "steps_load",
               "steps_load_drift", "steps_load_local", "steps_load_oracle")


def measure_all(setup: Setup, lock: str | None,
                profile_from: dict[str, Any] | None = None) -> dict[str, Any]:
    """Profile (or take `profile_from`'s profile: a raw file of the same session), then
    measure every topology of `setup`."""
    model_dir = setup.model_dir()
    core = sorted(os.sched_getaffinity(0))[0]
    if profile_from is not None:
        profile, settle = profile_from["profile"], profile_from.get("settle_effect")
    else:
        with cpu_lock(lock):
            print(f"profiling {model_dir.name} on core {core} (load {snapshot.load_avg()})",
                  flush=True)
            profile = measure.profile(setup, model_dir, core)
            settle = measure.settle_effect(setup, model_dir, core)
    print(f"profile: {profile['wall_s']:.0f} s, CPU share {profile['cpu_share']:.2f}",
          flush=True)
    topologies = []
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"calibration-{os.getpid()}"
    for topology in setup.topologies:
        print(f"measuring {topology}", flush=True)
        topologies.append(measure.run_topology(setup, topology, model_dir, log_dir,
                                               lambda: cpu_lock(lock)))
    return {"setup": setup.to_dict(), "profile": profile, "settle_effect": settle,
            "topologies": topologies}


def _real_row(setup: Setup, run: dict[str, Any]) -> dict[str, Any]:
    real = replay.real_arrays(run["records"])
    busy: dict[str, float] = {}
    for name, seconds in run["engine_busy_s"].items():
        role = name.split("-")[0]
        busy[role] = round(busy.get(role, 0.0) + seconds, 3)
    # CPU the worker process got per second its engine spent in steps (HTTP, KV sends
    # and the GIL-sharing streaming threads make it > 1; other processes on the core < 1)
    cpu_per_busy = {name: round(run["process_cpu_s"][name] / s, 3)
                    for name, s in run["engine_busy_s"].items() if s > 0}
    return {**stats(real["ttft_s"], real["tpot_s"], real["finished"], setup.slo),
            "num_sent": len(real["ttft_s"]), "num_failed": int((~real["finished"]).sum()),
            "engine_busy_s": busy, "worker_cpu_per_busy_s": cpu_per_busy}


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    setup = setup_from_dict(raw["setup"])
    profile = raw["profile"]
    rows, fits = [], {}
    arrays: list[dict[str, Any]] = []  # per row: per-request arrays, real and per variant
    for topo in raw["topologies"]:
        name = topo["topology"]
        by_key = variants.fits(setup, name, topo["probe"], profile,
                                topo.get("speed_probe"))
        fits[name] = {k if isinstance(k, str) else f"{k[0]}{'+prefill_scale' if k[1] else ''}": v
                      for k, v in by_key.items()}
        for run in topo["runs"]:
            real = _real_row(setup, run)
            row: dict[str, Any] = {
                "topology": name, "rate_rps": run["rate_rps"], "repeat": run.get("repeat"),
                "load_before": run["load_before"], "load_after": run["load_after"],
                "process_cpu_s": run["process_cpu_s"],
                "foreign_cpu_s": run.get("foreign_cpu_s"), "duration_s": run["duration_s"],
                "contaminated": snapshot.contaminated(run), "router": run["router"],
                "real": real, "real_steps": steps.summary(
                    steps.reconstruct(run["records"]), replay.latency_model(setup, profile))}
            measured_steps = step_metrics.measured(run)
            arrays.append({"real": replay.real_arrays(run["records"]),
                           "measured_steps": measured_steps})
            if measured_steps:
                row["measured_steps"] = {r: step_metrics.per_run(s, 1)
                                         for r, s in measured_steps.items()}
            for variant in VARIANTS:
                sim, scale = variants.simulate_variant(setup, name, run, profile, variant, by_key)
                st = stats(sim["ttft_s"], sim["tpot_s"], sim["finished"], setup.slo)
                arrays[-1][variant] = sim
                row[variant] = {**st, "engine_busy_s": sim["engine_busy_s"],
                                "num_steps": sim["num_steps"], "step_scale": scale,
                                "error": errors(real, st),
                                "steps_sim": {r: step_metrics.per_run(s, sim["num_draws"])
                                              for r, s in sim["step_stats"].items()}}
            row["ttft_stages"] = tail.stages(run)
            if name == "2 mixed":
                f = by_key[("requests", True)]
                steady = dataclasses.replace(
                    replay.ServingOverhead.from_dict(f["overhead"]), prefill_jitter_cv=0.0)
                scale = row["calibrated"]["step_scale"]["mixed"]
                row["ttft_breakdown"] = tail.analyse_run(setup, run, profile, steady, scale)
            rows.append(row)
    groups = pooled.judge(rows, arrays, VARIANTS, setup.slo)
    # the gauges' latencies forecast a judged run only where they run its workload at its
    # rate (not before a trace window)
    baseline = [] if setup.trace or setup.gauge_rate else gauge.measured_baseline(
        [r for t in raw["topologies"] for r in t["runs"]], groups, setup.slo)
    judged = {v: pooled.summarize(groups, v) for v in VARIANTS}
    held_out = twins.summarize(twins.differences(rows, arrays, VARIANTS))
    summary = {v: summarize_errors(rows, v) for v in VARIANTS}
    tables = {f"judged_{v}": pooled.markdown(groups, v) for v in VARIANTS}
    tables["judged_slos"] = pooled.slo_markdown(groups)
    tables["twins"] = twins.markdown(held_out)
    tables["gauge_baseline"] = gauge.baseline_markdown(baseline)
    tables["real_steps"] = steps.steps_markdown(rows)
    tables.update({v: markdown(rows, v) for v in VARIANTS})
    tables.update({f"slo_sweep_{v}": sweep_markdown(rows, v) for v in VARIANTS})
    repeats = repeatability(rows)
    tables["real_repeatability"] = repeat_markdown(repeats)
    tables["ttft_breakdown"] = tail.breakdown_markdown(rows)
    tables["ttft_stages"] = tail.stages_markdown(rows)
    step_groups = {v: step_metrics.pool(rows, arrays, v) for v in VARIANTS}
    tables.update({f"step_metrics_{v}": step_metrics.markdown(g) for v, g in step_groups.items()})
    return {"setup": setup.to_dict(), "profile_cpu_share": profile["cpu_share"],
            "profile_wall_s": profile["wall_s"], "settle_effect": raw.get("settle_effect"),
            "default_link": dataclasses.asdict(DEFAULT_LINK), "fit": fits,
            "judged": {"verdict": {v: pooled.verdict(judged[v]) for v in VARIANTS},
                       "errors": judged, "groups": groups, "twins": held_out},
            "errors": summary, "verdict": {v: verdict(summary[v]) for v in VARIANTS},
            "gauge_baseline": baseline, "real_repeatability": repeats, "step_metrics": step_groups, "rows": rows,
            "tables_markdown": tables}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="goodput-chat", choices=sorted(PRESETS))
    parser.add_argument("--topologies", default=None, help="comma-separated subset")
    parser.add_argument("--lock", default=None, help="flock this file around each measuring "
                                                     "phase (the shared CPU lock)")
    parser.add_argument("--replay", default=None, help="a *_raw.json[.gz] to re-analyse")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="*_raw.json[.gz] files measured in pieces: merge, write the merged "
                             "raw beside --out, analyse")
    parser.add_argument("--profile-from", default=None,
                        help="take the profile from this *_raw.json[.gz] instead of measuring "
                             "one (a later piece of one session)")
    parser.add_argument("--out", default=str(RESULTS / "planner_calibration.json"))
    args = parser.parse_args()
    started = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_path = raw_path_for(out)
    if args.replay:
        raw = read_raw(args.replay)
        command = raw.get("command", "")
        analysed = f"PYTHONPATH=. python benchmarks/planner_calibration.py --replay {args.replay}"
    elif args.merge:
        raw = merge_raw([read_raw(p) for p in args.merge])
        write_raw(raw_path, raw)
        command = raw["command"]
        analysed = ("PYTHONPATH=. python benchmarks/planner_calibration.py --merge "
                    + " ".join(Path(p).name for p in args.merge))
    else:
        setup = PRESETS[args.preset]
        if args.topologies:
            setup = dataclasses.replace(setup, topologies=tuple(
                t.strip() for t in args.topologies.split(",")))
        command = (f"PYTHONPATH=. python benchmarks/planner_calibration.py --preset "
                   f"{args.preset}" + (f" --topologies '{args.topologies}'"
                                       if args.topologies else "") + " --lock LOCKFILE"
                   + (f" --profile-from {Path(args.profile_from).name}"
                      if args.profile_from else ""))
        raw = measure_all(setup, args.lock, read_raw(args.profile_from)
                          if args.profile_from else None)
        raw["command"] = command
        raw["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_raw(raw_path, raw)
        analysed = command
    result = {"command": command, "analysed_by": analysed, "raw": raw_path.name,
              "measured_at": raw.get("measured_at"), **analyse(raw),
              "wall_s": round(time.time() - started, 1)}
    for variant in VARIANTS:
        print(f"\n{variant}, per run: {result['verdict'][variant]}\n"
              f"{result['tables_markdown'][variant]}")
    for variant in VARIANTS:
        print(f"\n{variant}, repeats pooled: {result['judged']['verdict'][variant]}\n"
              f"{result['tables_markdown']['judged_' + variant]}")
    print("\nSLOs at the pooled real quantiles:\n" + result["tables_markdown"]["judged_slos"])
    print("\neach repeat against its twins (twins.py; the noise floor):\n"
          + result["tables_markdown"]["twins"])
    if result["gauge_baseline"]:
        print("\nthe gauges' own latencies as the forecast (pooled, against the judged):\n"
              + result["tables_markdown"]["gauge_baseline"])
    print("\nreal runs repeated (noise floor):\n" + result["tables_markdown"]["real_repeatability"])
    print("\n2 mixed TTFT by stage (ms, means):\n" + result["tables_markdown"]["ttft_breakdown"])
    print("\nreal TTFT by timeline stage (ms, median / mean of the slowest 10%):\n"
          + result["tables_markdown"]["ttft_stages"])
    for variant in STEP_TABLES:
        print(f"\nsteps measured (worker /metrics) / simulated ({variant}), per run:\n"
              + result["tables_markdown"][f"step_metrics_{variant}"])
    for name, by_key in result["fit"].items():
        fs = by_key["steps"]
        print(f"fit {name} (steps): overhead {fs['overhead']}, link {fs['link']}, dropped "
              f"{fs['dropped_phases']}\n  points {fs['points']}\n  lines {fs['lines']}")
        f = by_key["requests+prefill_scale"]
        lines = {r: (round(v["at_zero"], 3), v["per_token_rate"])
                 for r, v in f["step_scale_lines"].items()}
        print(f"fit {name}: prefill {f['prefill']['prefill_scale']:.3f}, overhead {f['overhead']}, step scale (at 0, per tok/s) {lines}, "
              f"link {f['link']}")
    out.write_text(json.dumps(result, indent=1, default=json_default) + "\n")
    print(f"wrote {out} in {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
