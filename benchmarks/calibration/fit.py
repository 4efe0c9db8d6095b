"""Serving overheads and the KV handoff, fitted on a topology's calibration probe only.

Three small closed-form steps, each on probe requests (never on a validation run):

1. KV handoff (1P1D): for a lone disaggregated request, the gap between its first token
   (from the prefill worker) and its second (the decode worker's first step after the
   KV import) exceeds its usual inter-token gap by the handoff. Least squares of that
   excess on KV bytes gives the link's latency and bandwidth (the bandwidth falls back
   to the default when the slope is not positive).
2. Step scale per role: the engine busy seconds the workers reported over the probe,
   against the simulated busy seconds of the same requests (steps the profile prices
   well give ~1; a serving worker's steps run slower than back-to-back profiled ones
   after idle and while other processes share its core).
3. Step costs: replay the probe with those scales; every request's TPOT gap to the real
   one is explained as a * (d TPOT / d step_s) + b * (d TPOT / d per_seq_s), the
   derivatives taken by the simulator itself (replays with 1 ms of each). Least squares
   over the probe phases' medians (lone, bursts of 4 and 8: different batch sizes),
   with a, b >= 0.
4. Delivery: with the step costs in, the median TTFT the simulator still lacks on the
   lone requests (router + HTTP + SSE, and whatever a first step after idle costs).
5. Prefill jitter: the coefficient of variation (from a short grid) of a random factor
   on every step that computes prompt tokens that brings the simulated p90 TTFT of the
   probe's Poisson phases (3 and 5 req/s, their own seeds) closest to the real one: a
   deterministic simulation has no variance for queueing to turn into a tail.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.calibration.replay import (
    Link,
    latency_model,
    prompt_stage_s,
    real_arrays,
    replay,
)
from benchmarks.calibration.setup import Setup
from splitserve.planner import ServingOverhead

DELTA_S = 1e-3


def fit_link(setup: Setup, lone: list[dict[str, Any]], kv_bytes_per_token: int,
             default: Link) -> dict[str, Any]:
    real = real_arrays(lone)
    keep = (real["finished"] & (real["input_len"] > setup.short_prompt_len)
            & np.isfinite(real["first_itl_s"]) & np.isfinite(real["median_itl_s"]))
    excess = (real["first_itl_s"] - real["median_itl_s"])[keep]
    kv_bytes = (real["input_len"] * kv_bytes_per_token)[keep]
    out: dict[str, Any] = {"num_requests": int(keep.sum()),
                           "median_excess_s": float(np.median(excess)) if len(excess) else None}
    bytes_s = default.bytes_s
    if len(excess) >= 3 and np.ptp(kv_bytes) > 0:
        slope, intercept = np.polyfit(kv_bytes, excess, 1)
        out["ls_slope_s_per_byte"], out["ls_intercept_s"] = float(slope), float(intercept)
        if slope > 0:
            bytes_s = 1.0 / float(slope)
    latency = float(np.median(excess - kv_bytes / bytes_s)) if len(excess) else default.latency_s
    out["link"] = {"bytes_s": bytes_s, "latency_s": max(latency, 0.0)}
    return out


def fit_step_scale(setup: Setup, topology: str, probe: list[dict[str, Any]],
                   profile: dict[str, Any], link: Link, routing: str = "requests",
                   base: ServingOverhead | None = None) -> dict[str, Any]:
    """Per role: real / simulated engine busy seconds of each probe phase, and a line
    through them against the phase's offered token rate (least squares weighted by busy
    time, slope >= 0): more tokens per second means more router, client and KV-transfer
    work on the workers' two cores."""
    points: dict[str, list[tuple[float, float, float]]] = {}
    for phase in probe:
        real: dict[str, float] = {}
        for name, seconds in phase["engine_busy_s"].items():
            role = name.split("-")[0]
            real[role] = real.get(role, 0.0) + seconds
        sim = replay(setup, topology, phase["records"], profile, link, base, routing=routing)
        for role, seconds in sim["engine_busy_s"].items():
            if seconds > 0 and real.get(role, 0.0) > 0:
                points.setdefault(role, []).append((sim["token_rate"], real[role] / seconds,
                                                    seconds))
    lines = {}
    for role, pts in points.items():
        rate, ratio, weight = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
        w = weight / weight.sum()
        mean_rate, mean_ratio = float(w @ rate), float(w @ ratio)
        var = float(w @ (rate - mean_rate) ** 2)
        slope = max(float(w @ ((rate - mean_rate) * (ratio - mean_ratio))) / var, 0.0) \
            if var > 0 else 0.0
        lines[role] = {"at_zero": mean_ratio - slope * mean_rate, "per_token_rate": slope,
                       "points": [{"token_rate": r, "busy_ratio": q, "sim_busy_s": b}
                                  for r, q, b in pts]}
    return lines


def step_scale_at(lines: dict[str, Any], token_rate: float) -> dict[str, float]:
    """The fitted per-role step scale for a run offering `token_rate` tokens per second
    (never below 0.5: a line extrapolated far down is not a measurement)."""
    return {role: max(line["at_zero"] + line["per_token_rate"] * token_rate, 0.5)
            for role, line in lines.items()}


def _tpot_gaps(setup: Setup, topology: str, phase: list[dict[str, Any]],
               profile: dict[str, Any], link: Link, lines: dict[str, Any],
               routing: str = "requests", start: ServingOverhead | None = None,
               ) -> dict[str, float]:
    start = start or ServingOverhead()
    bare = replay(setup, topology, phase, profile, link, routing=routing)
    real = tiled(real_arrays(phase), len(bare["ttft_s"]))
    scale = step_scale_at(lines, bare["token_rate"])
    base = replay(setup, topology, phase, profile, link, start, scale, routing)
    with_a = replay(setup, topology, phase, profile, link,
                    dataclasses.replace(start, step_s=DELTA_S), scale, routing)
    with_b = replay(setup, topology, phase, profile, link,
                    dataclasses.replace(start, per_seq_s=DELTA_S), scale, routing)
    ok = real["finished"] & base["finished"] & np.isfinite(real["tpot_s"]) & (
        real["output_len"] > 1)
    return {"gap_s": float(np.median((real["tpot_s"] - base["tpot_s"])[ok])),
            "d_step": float(np.median(((with_a["tpot_s"] - base["tpot_s"]) / DELTA_S)[ok])),
            "d_per_seq": float(np.median(((with_b["tpot_s"] - base["tpot_s"]) / DELTA_S)[ok])),
            "num_requests": int(ok.sum())}


def tiled(real: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """The real per-request arrays repeated to line up with a replay of several draws
    (replay concatenates its draws' per-request arrays)."""
    reps = length // len(real["ttft_s"])
    return {k: np.tile(v, reps) for k, v in real.items()}


def solve_nonneg(rows: list[tuple[float, float]], y: list[float]) -> tuple[float, float]:
    """min ||A x - y|| over x >= 0 for two unknowns: the unconstrained solution, else the
    best of the two one-variable fits and zero."""
    a, b = np.array(rows, dtype=float), np.array(y, dtype=float)
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    if x[0] >= 0 and x[1] >= 0:
        return float(x[0]), float(x[1])
    best = (0.0, 0.0)
    best_err = float(np.sum(b**2))
    for col in (0, 1):
        c = a[:, col]
        denom = float(c @ c)
        if denom <= 0:
            continue
        v = max(float(c @ b) / denom, 0.0)
        cand = (v, 0.0) if col == 0 else (0.0, v)
        err = float(np.sum((a @ np.array(cand) - b) ** 2))
        if err < best_err:
            best, best_err = cand, err
    return best


def lone_prompt_stages(setup: Setup, lone: list[dict[str, Any]],
                       model: Any) -> list[tuple[float, float]]:
    """(profiled price, measured seconds) of each lone one-chunk prompt step: the
    engine's first scheduled -> first token (router timeline) of every successful lone
    request whose prompt fits the budget."""
    out = []
    for r in lone:
        stage = prompt_stage_s(r)
        if not r["success"] or r["input_len"] > setup.token_budget or stage is None:
            continue
        n = r["input_len"]
        out.append((model.step_s(n, n * (n + 1) / 2, n, 0, 0), stage))
    return out


def fit_prefill_scale(setup: Setup, lone: list[dict[str, Any]], profile: dict[str, Any],
                      step_s: float = 0.0) -> dict[str, Any]:
    """Median over the lone probe requests (each alone on its worker) of the engine's
    first-scheduled -> first-token time (router timeline), less a fixed per-step cost
    `step_s` priced apart, against the profile's time of that one-chunk prompt step. 1
    when no timeline came back."""
    stages = lone_prompt_stages(setup, lone, latency_model(setup, profile))
    ratios = [(stage - step_s) / price for price, stage in stages]
    scale = float(np.median(ratios)) if ratios else 1.0
    return {"prefill_scale": max(scale, 0.5), "num_requests": len(ratios),
            "ratios": [round(x, 3) for x in ratios]}


def fit_overheads(setup: Setup, topology: str, probe: list[dict[str, Any]],
                  profile: dict[str, Any], default_link: Link, routing: str = "requests",
                  prefill_scale: bool = True) -> dict[str, Any]:
    """Link, step costs and delivery delay for `topology` from its probe phases, with
    the simulated router picking workers by `routing` (see `replay`); with
    `prefill_scale`, prompt steps get their own factor first (`fit_prefill_scale`) and
    the rest is fitted on top of it."""
    phases = {p["phase"]: p["records"] for p in probe}
    out: dict[str, Any] = {"on": "calibration probe: " + ", ".join(phases)}
    link = default_link
    if topology != "2 mixed":
        out["handoff"] = fit_link(setup, phases["lone"], int(profile["kv_bytes_per_token"]),
                                  default_link)
        link = Link(**out["handoff"]["link"])
    start = ServingOverhead()
    if prefill_scale:
        out["prefill"] = fit_prefill_scale(setup, phases["lone"], profile)
        start = ServingOverhead(prefill_scale=out["prefill"]["prefill_scale"])
    lines = fit_step_scale(setup, topology, probe, profile, link, routing, start)
    gaps = {name: _tpot_gaps(setup, topology, recs, profile, link, lines, routing, start)
            for name, recs in phases.items()}
    step_s, per_seq_s = solve_nonneg([(g["d_step"], g["d_per_seq"]) for g in gaps.values()],
                                     [g["gap_s"] for g in gaps.values()])
    steps_only = dataclasses.replace(start, step_s=step_s, per_seq_s=per_seq_s)
    lone = phases["lone"]
    scale = step_scale_at(lines, replay(setup, topology, lone, profile, link,
                                        routing=routing)["token_rate"])
    sim = replay(setup, topology, lone, profile, link, steps_only, scale, routing)
    real = tiled(real_arrays(lone), len(sim["ttft_s"]))
    ok = real["finished"] & sim["finished"]
    delivery_s = max(float(np.median((real["ttft_s"] - sim["ttft_s"])[ok])), 0.0)
    overhead = dataclasses.replace(steps_only, delivery_s=delivery_s)
    poisson = [recs for name, recs in phases.items() if name.startswith("poisson")]
    jitter = fit_jitter(setup, topology, poisson, profile, link, overhead, lines, routing)
    jitter["from_timelines"] = fit_jitter_timelines(setup, topology, poisson, profile, link,
                                                    overhead, lines, routing)
    if jitter["from_timelines"]["prefill_jitter_cv"] is not None:
        jitter["prefill_jitter_cv"] = jitter["from_timelines"]["prefill_jitter_cv"]
    overhead = dataclasses.replace(overhead, prefill_jitter_cv=jitter["prefill_jitter_cv"])
    out.update({"step_scale_lines": lines, "tpot_gaps": gaps, "jitter": jitter,
                "link": {"bytes_s": link.bytes_s, "latency_s": link.latency_s},
                "overhead": overhead.to_dict()})
    return out


JITTER_GRID = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8)


def fit_jitter(setup: Setup, topology: str, phases: list[list[dict[str, Any]]],
               profile: dict[str, Any], link: Link, overhead: ServingOverhead,
               lines: dict[str, Any], routing: str = "requests") -> dict[str, Any]:
    """The JITTER_GRID value with the least mean |log(simulated / real)| of p90 TTFT over
    `phases`."""
    if not phases:
        return {"prefill_jitter_cv": 0.0, "on": []}
    scores = {}
    for cv in JITTER_GRID:
        errs = []
        for recs in phases:
            real = real_arrays(recs)
            scale = step_scale_at(lines, replay(setup, topology, recs, profile, link,
                                                routing=routing)["token_rate"])
            sim = replay(setup, topology, recs, profile, link,
                         dataclasses.replace(overhead, prefill_jitter_cv=cv), scale, routing)
            for key in ("ttft_s",):
                r = np.nanpercentile(real[key][real["finished"]], 90)
                s = np.nanpercentile(sim[key][sim["finished"]], 90)
                errs.append(abs(float(np.log(s / r))))
        scores[cv] = float(np.mean(errs))
    best = min(scores, key=lambda cv: scores[cv])
    return {"prefill_jitter_cv": best, "mean_abs_log_err": scores, "on": "poisson probe phases"}


def fit_jitter_timelines(setup: Setup, topology: str, phases: list[list[dict[str, Any]]],
                         profile: dict[str, Any], link: Link, overhead: ServingOverhead,
                         lines: dict[str, Any], routing: str = "requests",
                         ) -> dict[str, Any]:
    """The prompt-step jitter measured instead of searched for: over `phases` (the probe's
    Poisson phases), each one-chunk request's real prompt stage (engine first scheduled ->
    first token, from the router timeline) against the same request's simulated one
    (no jitter). sigma = std of log(real / simulated); the lognormal's CV is
    sqrt(exp(sigma^2) - 1). The spread is what a deterministic step model lacks under
    load (lone requests scatter by ~5%); it also holds some step-composition mismatch
    (the simulator batches its own arrivals), so it is an upper estimate."""
    logs = []
    for recs in phases:
        scale = step_scale_at(lines, replay(setup, topology, recs, profile, link,
                                            routing=routing)["token_rate"])
        sim = replay(setup, topology, recs, profile, link,
                     dataclasses.replace(overhead, prefill_jitter_cv=0.0), scale, routing)
        real = tiled(real_arrays(recs), len(sim["ttft_s"]))
        ok = (real["finished"] & np.isfinite(real["prefill_stage_s"])
              & (real["input_len"] <= setup.token_budget)
              & (real["input_len"] > setup.short_prompt_len)
              & np.isfinite(sim["prefill_stage_s"]) & (sim["prefill_stage_s"] > 0))
        logs.extend(np.log(real["prefill_stage_s"][ok] / sim["prefill_stage_s"][ok]).tolist())
    if len(logs) < 10:
        return {"prefill_jitter_cv": None, "num_requests": len(logs)}
    sigma = float(np.std(logs))
    return {"prefill_jitter_cv": round(float(np.sqrt(np.expm1(sigma * sigma))), 3),
            "sigma_log": sigma, "median_ratio": float(np.exp(np.median(logs))),
            "num_requests": len(logs)}
