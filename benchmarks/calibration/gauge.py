"""A speed gauge right before every judged repeat (the `steps_load_local` variant).

Six measurements (docs/calibration_history.md) showed the machine's speed moving while one
measurement runs: the same decode batch took 12 ms in one measurement and 18 ms in
another, and 5-9% more from one 45-s repeat to the next. Nothing inside this VM shows it
(no foreign CPU, no steal time): neighbours on the host share its caches and memory. A
probe taken minutes earlier cannot price steps that drift on that time scale.

The gauge is a short Poisson phase at the judged rate with the judged workload and its
own seed (never a judged request), measured on the same cluster right before each
repeat. Only its workers' step metrics are read, never its latencies: against the
`steps_load` fit (made on the calibration probe) they give the machine's speed factor at
that moment,

- decode: the gauge's mean decode step over the fit's price of a decode step at the
  gauge's own mean batch and KV length (`scale * profile + per_seq_s * batch`);
- prompt: the gauge's prompt-step seconds (prefill and mixed kinds, roles that compute
  prompts) over the simulated ones in a replay of the gauge with the fit;

and the repeat that follows is replayed with the decode price, the per-sequence cost and
the engine loop's gap scaled by the decode factor, the prompt price by the prompt factor.
`steps_load_oracle` takes the same factors from the judged run's own step metrics: not a
prediction, the bound any speed gauge could reach (what is left is the simulator's own
batching and queueing).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from benchmarks.calibration import fit_load, front_end, link_fit, step_metrics
from benchmarks.calibration.setup import Setup
from benchmarks.calibration.snapshot import contaminated

DURATION_S = 20.0
SEED_OFFSET = 700  # on top of the probe seed: never a judged run's (nor a speed probe's)
MIN_PROMPT_S = 0.2  # prompt-step seconds a factor needs (~4 prompt steps)
MIN_HANDOFFS = 10


def config(setup: Setup, url: str, base: dict[str, Any], rate: float, index: int) -> Any:
    """The bench config of the gauge number `index`, before a repeat at `rate`."""
    from splitserve.bench import BenchConfig

    return BenchConfig(url=url, **base, rate_rps=rate, num_requests=setup.num_requests,
                       duration_s=DURATION_S, seed=setup.probe_seed + SEED_OFFSET + index)


def factors(setup: Setup, topology: str, phase: dict[str, Any], profile: dict[str, Any],
            fitted: dict[str, Any], spread: bool = False, hist: bool = False,
            replayed: bool = False, handoff: bool = False) -> dict[str, Any]:
    """The speed factors of `phase` against the `steps_load` fit (1.0 where the phase
    has too few steps of a kind to tell). `spread`: the decode factor divides by the
    phase's simulated `spread_ratio` (its price over the spread of batches, not at the
    mean batch). `hist`: the same over the phase's measured spread of batches (its
    workers' batch-size histogram; the simulated spread where it was not recorded).
    `replayed`: the decode factor is the measured mean decode step over the one in a
    replay of the phase (twice: the factor changes the batches), as the prompt factor
    is: whatever the fit's simulation adds to a step (a host share) is priced in.
    `handoff`: also a KV handoff factor (`handoff_factor`; 1 on a colocated fleet)."""
    out: dict[str, Any] = {"decode": 1.0, "prompt": 1.0}
    measured = step_metrics.measured(phase)
    if not measured or contaminated(phase):
        return out
    points = fit_load.decode_points(setup, [{**phase, "phase": "gauge"}], profile)
    dec = fitted["decode"]
    if points:
        p = points[0]
        price = dec["scale"] * p["profile_s"] + dec["per_seq_s"] * p["batch"]
        out["decode"] = p["real_s"] / price
        out["decode_point"] = {**p, "fitted_s": price}
    rate = fit_load.offered_rate(setup, topology, phase["records"], profile, fitted)

    def replay_at(decode: float) -> dict[str, Any]:
        return fit_load.replay_fitted(setup, topology, phase["records"], profile,
                                      scaled(fitted, decode, 1.0), rate)

    sim = replay_at(out["decode"])
    if replayed and points:
        for _ in range(2):
            ratio = step_metrics.decode_factor(measured, sim)
            if ratio is None:
                break
            out["decode"] *= ratio
            sim = replay_at(out["decode"])
    if (spread or hist) and points:
        real = step_metrics.decode_batch_histogram(phase) if hist else None
        batches: Mapping[int, float] = real or sum(
            (c for role, c in sim["decode_batches"].items() if role != "prefill"), Counter())
        ratio = spread_ratio(setup, profile, fitted, batches, fit_load.ctx_per_seq(
            phase["records"]))
        out["decode"] /= ratio
        out["spread_ratio"] = ratio
        out["spread_from"] = "measured" if real else "simulated"
        sim = replay_at(out["decode"])
    real_s, sim_s = fit_load.prompt_seconds(measured, sim)
    if real_s >= MIN_PROMPT_S and sim_s > 0:
        out["prompt"] = real_s / sim_s
        out["prompt_seconds"] = {"measured_s": real_s, "simulated_s": sim_s}
    if handoff:
        out["handoff"] = handoff_factor(phase["records"], profile,
                                        fit_load.terms(fitted, rate)["link"])
    return out


def handoff_factor(records: list[dict[str, Any]], profile: dict[str, Any], link: Any) -> float:
    """The phase's KV handoffs (the decode worker's KV arrival after the prefill engine's
    first token), summed, over the fit's price of the same handoffs (link latency + KV
    bytes / bandwidth); 1 with fewer than MIN_HANDOFFS. The probe's lone requests price
    a small KV on an idle prefill worker; a saturated one sends a trace's 20-MB KV at a
    fraction of that bandwidth."""
    per_token = int(profile["kv_bytes_per_token"])
    pairs = link_fit.handoffs(records)
    real = sum(s for s, _ in pairs)
    price = sum(link.latency_s + n * per_token / link.bytes_s for _, n in pairs)
    return real / price if len(pairs) >= MIN_HANDOFFS and price > 0 else 1.0


def spread_ratio(setup: Setup, profile: dict[str, Any], fitted: dict[str, Any],
                 batches: Mapping[int, float], ctx_per_seq: float) -> float:
    """The fit's mean decode price over steps of these batch sizes, over its price at
    their mean batch. Below 1 where the batches spread over the concave part of the
    price (here a step grows steeply up to 4 sequences, then flattens: the GEMV changes
    kernels at 5 rows), so a factor read as "mean step / price at the mean batch" would
    come out too small by this ratio (Jensen's inequality). 1 without steps."""
    num = sum(batches.values())
    if not num:
        return 1.0
    model = fit_load.latency_model(setup, profile)
    dec = fitted["decode"]

    def price(batch: float) -> float:
        return (dec["scale"] * fit_load.profile_decode_s(model, batch, ctx_per_seq)
                + dec["per_seq_s"] * batch)

    mean_batch = sum(b * n for b, n in batches.items()) / num
    return sum(n * price(b) for b, n in batches.items()) / num / price(mean_batch)


def scaled(fitted: dict[str, Any], decode: float, prompt: float,
           handoff: float = 1.0) -> dict[str, Any]:
    """The `steps_load` fit with its step prices scaled by the speed factors (`handoff`:
    the KV link's latency and time per byte)."""
    out = copy.deepcopy(fitted)
    if handoff != 1.0:
        out["handoff_factor"] = out.get("handoff_factor", 1.0) * handoff
    out["decode"]["scale"] *= decode
    out["decode"]["per_seq_s"] *= decode
    out["gap"]["gap_s"] *= decode
    out["gap"]["per_seq_s"] *= decode
    out["prompt_factor"] *= prompt
    return out


def replay_run(setup: Setup, topology: str, run: dict[str, Any], profile: dict[str, Any],
               fitted: dict[str, Any], oracle: bool = False, spread: bool = False,
               hist: bool = False, replayed: bool = False, handoff: bool = False,
               front: bool = False) -> tuple[dict[str, Any], Any]:
    """A judged run replayed at the speed its gauge measured (`oracle`: at the speed the
    run itself had; `spread`, `hist`, `replayed`: see `factors`). `front`: every
    simulated TTFT also gets a draw of the gauge's front-end latency beyond the lone
    requests' median (`front_end.excess_latency_s`; `fitted["front_lone_s"]`). Without a
    gauge (raw files from before it) it is `steps_load`."""
    phase = run if oracle else run.get("gauge")
    f = (factors(setup, topology, phase, profile, fitted, spread, hist, replayed, handoff)
         if phase is not None
         else {"decode": 1.0, "prompt": 1.0})
    sim, terms = fit_load.replay_run(setup, topology, run["records"], profile,
                                     scaled(fitted, f["decode"], f["prompt"],
                                            f.get("handoff", 1.0)))
    speed = {k: f[k] for k in ("decode", "prompt", "handoff") if k in f}
    excess = (front_end.excess_latency_s(phase["records"], fitted["front_lone_s"],
                                         len(sim["ttft_s"]))
              if front and phase is not None else None)
    if excess is not None:
        # the delivery delay adds to the first token alone here: TPOT stays as simulated
        sim = {**sim, "ttft_s": sim["ttft_s"] + excess}
        speed["front_excess_p50_s"] = float(np.median(excess))
    return sim, {**terms, "speed": speed}



def measured_baseline(runs: list[dict[str, Any]], groups: list[dict[str, Any]],
                      slo: tuple[float, float]) -> list[dict[str, Any]]:
    """The naive forecast the simulation has to beat: each judged point's gauges' own
    latencies (other requests of the same workload at the same rate, minutes earlier),
    pooled like the judged repeats and judged the same way (`pooled.judge`'s groups)."""
    from benchmarks.calibration import pooled
    from benchmarks.calibration.replay import real_arrays

    out = []
    for g in groups:
        excluded = {e["repeat"] for e in g["excluded_repeats"]}
        parts = [real_arrays(r["gauge"]["records"]) for r in runs
                 if r["topology"] == g["topology"] and r["rate_rps"] == g["rate_rps"]
                 and r.get("gauge") and r.get("repeat") not in excluded]
        if not parts:
            continue
        slos = {k: (v["ttft_s"], v["tpot_s"]) for k, v in g["slos_at_quantiles"].items()}
        own = pooled.stats_at(pooled.pool(parts), slo, slos)
        out.append({"topology": g["topology"], "rate_rps": g["rate_rps"],
                    "num_gauges": len(parts), **own,
                    "error": pooled.errors(g["real"], own)})
    return out


def baseline_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| topology | rate req/s | gauges | p90 TTFT err | p90 TPOT err | attainment pp "
             "@ q50 / q75 / q90 |", "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        e = r["error"]
        pp = " / ".join(f"{e[f'attainment_pp@q{q}']:+.0f}" for q in (50, 75, 90))
        lines.append(f"| {r['topology']} | {r['rate_rps']:g} | {r['num_gauges']} | "
                     f"{e['p90_ttft_rel_err']:+.0%} | {e['p90_tpot_rel_err']:+.0%} | {pp} |")
    return "\n".join(lines)
