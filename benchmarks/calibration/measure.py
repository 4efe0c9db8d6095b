"""Measure on this machine: the engine's step profile, and real cluster runs.

Per topology, one cluster serves (after a few untimed warm-up requests) first the
calibration probe (its own seeds and arrival patterns: lone requests one at a time,
bursts of 4 and 8 at once, Poisson 3 and 5 req/s), then the validation runs (the goodput
benchmark's Poisson rates, one seed, each made `num_repeats` times, each right after a
20-s speed gauge at its rate: `gauge.py`). Only the probe and the gauges feed the fits;
the validation runs are only predicted. Per run it records every request, each
worker's engine busy seconds and step metrics, every process's CPU seconds and the router's route and KV
transfer counters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from benchmarks.calibration import speed_probe, timelines
from benchmarks.calibration.setup import TOPOLOGIES, Setup
from benchmarks.calibration.snapshot import contaminated, delta, foreign_share, load_avg, snapshot

# The probe: (name, arrival, rate req/s, burst size, number of requests, max concurrency,
# workload: "probe" = uniform 32-256 in / 16-64 out, "run" = the validation workload).
# Its seeds differ from the validation runs'; the Poisson phases sit between and beside
# the validation rates (3 and 5 req/s against 2, 4, 6) so the load-dependent step
# slowdown is measured on other requests than the ones it predicts.
# The Poisson phases last 20 s each, and 7 req/s brackets the highest validation rate: the
# load-dependent terms (fit_steps.py) are read between probe points, never extrapolated.
PROBE = (
    ("lone", "constant", 4.0, 1, 12, 1, "probe"),
    ("burst4", "burst", 2.0, 4, 8, None, "probe"),
    ("burst8", "burst", 3.0, 8, 16, None, "probe"),
    ("poisson3", "poisson", 3.0, 1, 60, None, "run"),
    ("poisson5", "poisson", 5.0, 1, 100, None, "run"),
    ("poisson7", "poisson", 7.0, 1, 140, None, "run"),
    # since the fifteenth measurement: lone prompts of 320-512 tokens (up to the budget:
    # one chunk each), so the lone requests span prompt steps priced ~40-150 ms and the
    # prompt price's fixed part can be told from its factor (fit_prompt.fit_prompt_affine).
    # Last, so the phases before keep their seeds.
    ("lone_long", "constant", 4.0, 1, 8, 1, "probe_long"),
    # since the mixed-long measurements: lone prompts of 2.25-3.75 budgets (3-4 chunks), so
    # the price of chunks run back to back can be told from a lone chunk's
    # (fit_prompt.fit_continuation_scale). Last, so the phases before keep their seeds.
    ("lone_chunked", "constant", 4.0, 1, 6, 1, "probe_chunked"),
)
# A contaminated probe phase or gauge (snapshot.contaminated) is measured again (up to
# MAX_PROBE_RETRIES times); a contaminated validation repeat gets one extra repeat.
MAX_PROBE_RETRIES = 2
MAX_EXTRA_REPEATS = 1


def profile(setup: Setup, model_dir: Path, core: int) -> dict[str, Any]:
    """`splitserve profile`'s measurement, on one pinned core and one torch thread: what
    each worker gets. Axes cover the runs' shapes (token budget, batch limit), refined
    where a step's cost jumps between grid points (the grid's default `refine_tol`;
    since the eleventh measurement: 16 -> 17 decoding sequences cost 18 -> 24 ms)."""
    from splitserve.engine.profiler import ProfileGrid, profile_engine

    budget = setup.token_budget
    prefill = tuple(n for n in (8, 32, 64, 128, 256, 512, 1024, 2048) if n < budget) + (budget,)
    batch = tuple(b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b < setup.max_num_seqs)
    grid = ProfileGrid(prefill_tokens=prefill, prefill_context=(0, 512, 1536),
                       decode_batch=(*batch, setup.max_num_seqs),
                       decode_context=(0, 1024, 4096), num_repeats=5, num_warmup=1,
                       num_settle=3)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        return profile_engine(model_dir, grid=grid, dtype=setup.dtype, num_threads=1,
                              kv_cache_bytes=None)
    finally:
        os.sched_setaffinity(0, before)


def settle_effect(setup: Setup, model_dir: Path, core: int) -> list[dict[str, Any]]:
    """Small cells timed round-robin beside large ones, with 0, 1 and 3 settle calls: why
    the profile takes 3 (a serving loop runs like-shaped steps back to back)."""
    from splitserve.engine.profiler import ProfileGrid, profile_engine

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    out = []
    try:
        for settle in (0, 1, 3):
            grid = ProfileGrid(prefill_tokens=(8, 512), prefill_context=(0, 1),
                               decode_batch=(1, 64), decode_context=(200, 4096),
                               num_repeats=5, num_warmup=1, num_settle=settle,
                               refine_tol=0.0)
            p = profile_engine(model_dir, grid=grid, dtype=setup.dtype, num_threads=1)
            out.append({"num_settle": settle,
                        "decode_1x200_s": p["decode"]["latency_s"][0][0],
                        "prefill_8_s": p["prefill"]["latency_s"][0][0]})
    finally:
        os.sched_setaffinity(0, before)
    return out


def _record(r: Any) -> dict[str, Any]:
    """A bench record, with its inter-token gaps kept (0.1 ms: each is one engine step of
    the request's worker, which is how `steps.py` rebuilds the workers' step timelines)
    and summarized for the fit."""
    import statistics

    d = r.to_dict()
    itl = d["itl_s"]
    d["itl_s"] = [round(g, 4) for g in itl]
    d["first_itl_s"] = itl[0] if itl else None
    d["median_itl_s"] = statistics.median(itl[1:]) if len(itl) > 1 else None
    return d


def _bench(cluster: Any, pids: dict[str, int], config: Any) -> dict[str, Any]:
    from splitserve.bench import run_bench

    load_before = load_avg()
    before = snapshot(cluster, pids)
    result = run_bench(dataclasses.replace(config, capture_timeline=True))
    after = snapshot(cluster, pids)
    records = []
    for r in result.records:
        d = _record(r)
        d.pop("send_wall_s", None)
        d["timeline"] = timelines.summarize(d.pop("timeline"), r.send_wall_s)
        records.append(d)
    return {"load_before": load_before, "load_after": load_avg(),
            "duration_s": result.summary["duration_s"], **delta(before, after),
            "records": records}


def run_topology(setup: Setup, topology: str, model_dir: Path, log_dir: Path,
                 lock: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
                 ) -> dict[str, Any]:
    """Start the topology's cluster, run the probe, then every validation rate. `lock()`
    is held around the warm-up + probe, and around each rate's repeats: each a few
    minutes at most (the cluster idles, unmeasured, between them)."""
    from splitserve.bench import SLO, BenchConfig
    from splitserve.cluster.launcher import Cluster, ClusterSpec, free_port

    num_prefill, num_decode, num_mixed = TOPOLOGIES[topology]
    spec = ClusterSpec(model_dir=str(model_dir), num_prefill=num_prefill,
                       num_decode=num_decode, num_mixed=num_mixed, router_port=free_port(),
                       log_dir=str(log_dir / topology.replace(" ", "_")),
                       worker_args=setup.worker_args(), router_args=setup.router_args())
    workload = setup.make_workload()
    base = dict(tokenizer_dir=str(model_dir), workload=workload, timeout_s=120.0,
                length_scale=setup.length_scale, slo=SLO(*setup.slo))
    out: dict[str, Any] = {"topology": topology, "probe": [], "runs": [], "speed_probe": []}
    with Cluster(spec) as cluster:
        pids = {c.name: c.proc.pid for c in cluster.children}
        # first-call costs (allocator growth, lazy imports) out of every measured run
        run_bench_warm = BenchConfig(url=cluster.url, **{**base, "num_requests": 6,
                                                         "rate_rps": 4.0, "seed": 99})
        with lock():
            _bench(cluster, pids, run_bench_warm)
            _probe(setup, topology, cluster, pids, base, out)
            _speed(setup, topology, cluster, pids, base, None, out)
        for rate in setup.rates:
            with lock():
                _speed(setup, topology, cluster, pids, base, rate, out)
                _runs_at(setup, topology, cluster, pids, base, rate, out)
    return out


def _probe(setup: Setup, topology: str, cluster: Any, pids: dict[str, int],
           base: dict[str, Any], out: dict[str, Any]) -> None:
    from splitserve.bench import BenchConfig, LengthDist, Workload

    # the probe: fixed-length prompts around the workload's typical size, so that the
    # bursts are batches of like requests
    probe_workload = Workload("probe", LengthDist("uniform", 144, 32, 256),
                              LengthDist("uniform", 40, 16, 64), description="probe")
    hi = setup.token_budget
    long_workload = Workload("probe_long", LengthDist("uniform", (hi * 5 // 8 + hi) / 2,
                                                      hi * 5 // 8, hi),
                             LengthDist("uniform", 24, 16, 32), description="probe_long")
    chunked_workload = Workload("probe_chunked", LengthDist("uniform", 3 * hi, hi * 9 // 4,
                                                           hi * 15 // 4),
                                LengthDist("uniform", 24, 16, 32), description="probe_chunked")
    workloads = {"probe": probe_workload, "probe_long": long_workload,
                 "probe_chunked": chunked_workload}
    for i, (name, arrival, rate, burst, count, conc, kind) in enumerate(PROBE):
        lengths = ({"workload": workloads[kind], "length_scale": 1.0} if kind in workloads
                   else {})
        config = BenchConfig(url=cluster.url, **{**base, **lengths},
                             arrival=arrival, rate_rps=rate, burst_size=burst,
                             num_requests=count, max_concurrency=conc,
                             seed=setup.probe_seed + i)
        run = _bench(cluster, pids, config)
        retried = None
        for _ in range(MAX_PROBE_RETRIES):
            if not contaminated(run):
                break
            retried = foreign_share(run)
            run = _bench(cluster, pids, config)
        out["probe"].append({"phase": name, "arrival": arrival, "rate_rps": rate,
                             "burst_size": burst, "max_concurrency": conc,
                             "retried_after_foreign_share": retried, **run})
        print(f"  {topology} probe {name}: {len(run['records'])} requests, foreign CPU "
              f"{run['foreign_cpu_s']:.1f} s" + (f" (retried: {retried:.0%})" if retried
                                                  else ""), flush=True)


def _speed(setup: Setup, topology: str, cluster: Any, pids: dict[str, int],
           base: dict[str, Any], rate: float | None, out: dict[str, Any]) -> None:
    """The prompt-speed probe (speed_probe.py): the reference after the calibration
    probe (`rate` None), then right before each rate's judged repeats."""
    index = len(out["speed_probe"])
    run = _bench(cluster, pids, speed_probe.config(setup, cluster.url, base, index))
    out["speed_probe"].append({"rate_rps": rate, **run})
    print(f"  {topology} speed probe before {rate}: foreign CPU "
          f"{run['foreign_cpu_s']:.1f} s", flush=True)


def _gauge(setup: Setup, cluster: Any, pids: dict[str, int], base: dict[str, Any],
           rate: float, index: int) -> dict[str, Any]:
    """The speed gauge (gauge.py) right before a judged repeat, measured again (up to
    MAX_PROBE_RETRIES times) while other people's processes contaminate it."""
    from benchmarks.calibration import gauge

    # a trace setup without its own gauge rate gauges with the trace window itself (its
    # prompt steps run back to back, which a chat gauge never shows)
    config = (judged_config(setup, cluster.url, base, rate)
              if setup.trace is not None and setup.gauge_rate is None
              else gauge.config(setup, cluster.url, base, rate, index))
    run = _bench(cluster, pids, config)
    for _ in range(MAX_PROBE_RETRIES):
        if not contaminated(run):
            break
        run = _bench(cluster, pids, config)
    return run


def judged_config(setup: Setup, url: str, base: dict[str, Any], rate: float) -> Any:
    """A judged run's bench config: Poisson at `rate`, or the setup's trace window (its
    lengths scaled by the trace scaling, not again by the bench)."""
    from splitserve.bench import BenchConfig

    if setup.trace is not None:
        return BenchConfig(url=url, **{**base, "length_scale": 1.0}, arrival="trace",
                           trace=setup.trace_scaling(), num_requests=setup.num_requests,
                           duration_s=setup.duration_s, seed=setup.seed)
    return BenchConfig(url=url, **base, rate_rps=rate, num_requests=setup.num_requests,
                       duration_s=setup.duration_s, seed=setup.seed)


def _runs_at(setup: Setup, topology: str, cluster: Any, pids: dict[str, int],
             base: dict[str, Any], rate: float, out: dict[str, Any]) -> None:
    # one extra repeat when a repeat was contaminated (it stays in the raw file, flagged
    # by the analysis and left out of the reference)
    num_clean = repeat = 0
    while num_clean < setup.num_repeats and repeat < setup.num_repeats + MAX_EXTRA_REPEATS:
        config = judged_config(setup, cluster.url, base, rate)
        speed = _gauge(setup, cluster, pids, base, setup.gauge_rate or rate, len(out["runs"]))
        run = {**_bench(cluster, pids, config), "gauge": speed}
        num_clean += not contaminated(run)
        out["runs"].append({"topology": topology, "rate_rps": rate, "repeat": repeat, **run})
        ok = [r for r in run["records"] if r["success"]]
        print(f"  {topology} @ {rate:g} req/s #{repeat}: {len(ok)}/"
              f"{len(run['records'])} done, load {run['load_before'][0]} -> "
              f"{run['load_after'][0]}, foreign CPU {run['foreign_cpu_s']:.1f} s", flush=True)
        repeat += 1
