"""Serving terms measured step by step on the calibration probe (the `steps` variant).

`fit.py` infers the step slowdown from aggregates: engine busy seconds against a line in
offered token rate, and per-step / per-sequence costs from median TPOT gaps. With short
probe phases that is fragile: one phase with another engineer's job beside it (measured
here: 5 CPU seconds in a 10 s phase) tilts the line, which is then extrapolated to the
validation rates. This fit measures each term where it happens instead, on the probe
only (its own seeds; Poisson phases at 3, 5 and 7 req/s bracket the validation rates):

1. Phases during which processes that are not ours used a measurable share of the cores
   (`measure.contaminated`) are left out and named (measure.py reruns such a phase once).
2. Per phase, at its offered output-token rate (from a bare replay, as for a judged run):
   - decode factor: the median of real / profiled duration over its pure decode steps,
     rebuilt from the client's token arrival times (`steps.py`);
   - prompt factor: exp(mean + var / 2) of log(real / simulated prompt stage) over its
     one-chunk requests (router timelines; the simulation with this phase's decode
     factor and the lone requests' `prefill_scale`): the mean of a lognormal, since the
     simulator's prompt-step jitter has mean 1;
   - KV handoff latency (split only): the median of (decode worker's KV arrival - the
     prefill engine's first token - KV bytes / link bandwidth);
   - join cost (split only): the median, over the decode worker's steps in which requests
     joined with transferred KV, of the seconds beyond the decode step's price (profile x
     decode factor) per joining request (`TransferConfig.join_s`).
   Each is a line through the phases' points against token rate (least squares weighted
   by requests, slope >= 0), read at a judged run's offered rate and held flat beyond
   the probe's range (never extrapolated).
3. Prompt-step jitter: the spread of those log ratios around each phase's own mean,
   pooled (a CV for the simulator's mean-1 lognormal factor).
4. As in fit.py: `prefill_scale` and the link bandwidth from the lone requests, and the
   delivery delay (the lone requests' median TTFT the simulation still lacks).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.calibration import step_metrics, steps
from benchmarks.calibration.fit import fit_link, fit_prefill_scale, tiled
from benchmarks.calibration.link_fit import (
    fit_link_timelines,
    fit_link_transfers,
    priced_handoff_latencies,
)
from benchmarks.calibration.replay import Link, latency_model, real_arrays, replay
from benchmarks.calibration.setup import Setup
from benchmarks.calibration.snapshot import contaminated, foreign_share
from splitserve.planner import ServingOverhead

_KEYS = ("decode_factor", "prompt_factor", "handoff_latency_s", "join_s")
# a phase most of whose prompts overflowed onto the decode worker has no join cost to read
# there: its decode worker ran mostly prompt steps (ml11's 7-req/s probe phase, 85 of 140
# overflowed, read 131 ms a join against 0-1.5 ms on its other phases, and every judged
# TPOT of that measurement came out 70-90% high)
MAX_JOIN_OVERFLOW = 0.5


def clean_phases(probe: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The probe phases the fit uses, and the names of those left out (the lone phase is
    always kept: everything is priced relative to it; `lone_chunked` is read only by
    `fit_prompt.fit_continuation_scale`, so every other fit stays as it was before the phase)."""
    kept, dropped = [], []
    for phase in probe:
        if phase["phase"] == "lone_chunked":
            continue
        if contaminated(phase) and phase["phase"] != "lone":
            dropped.append(f"{phase['phase']} (foreign CPU {phase['foreign_cpu_s']:.1f} s, "
                           f"{foreign_share(phase):.0%} of a core)")
        else:
            kept.append(phase)
    return kept, dropped


def _prompt_logs(setup: Setup, topology: str, records: list[dict[str, Any]],
                 profile: dict[str, Any], link: Link, overhead: ServingOverhead,
                 scale: dict[str, float], chunked: bool) -> tuple[np.ndarray, dict[str, Any]]:
    sim = replay(setup, topology, records, profile, link, overhead, scale, "polled", chunked)
    real = tiled(real_arrays(records), len(sim["ttft_s"]))
    ok = (real["finished"] & np.isfinite(real["prefill_stage_s"])
          & (real["input_len"] <= setup.token_budget)
          & (real["input_len"] > setup.short_prompt_len)
          & np.isfinite(sim["prefill_stage_s"]) & (sim["prefill_stage_s"] > 0))
    return np.log(real["prefill_stage_s"][ok] / sim["prefill_stage_s"][ok]), sim


def _busy_prompt_factor(phase: dict[str, Any], sim: dict[str, Any]) -> float | None:
    """What the simulated prompt steps must be multiplied by for the prompt-computing
    workers' simulated busy seconds to match the real ones (their other steps, already
    priced with the decode factor, kept): a prefill worker's steps are all prompt steps,
    a mixed worker's are split by what they computed."""
    real: dict[str, float] = {}
    for name, seconds in phase["engine_busy_s"].items():
        role = name.split("-")[0]
        real[role] = real.get(role, 0.0) + seconds
    num = den = 0.0
    for role, prompt_s in sim["prompt_busy_s"].items():
        if role == "decode" or prompt_s <= 0 or role not in real:
            continue
        num += real[role] - (sim["engine_busy_s"][role] - prompt_s)
        den += prompt_s
    return num / den if den > 0 else None


def _roles(topology: str) -> tuple[str, ...]:
    return ("mixed",) if topology == "2 mixed" else ("prefill", "decode")


def phase_point(setup: Setup, topology: str, phase: dict[str, Any], profile: dict[str, Any],
                link: Link, base: ServingOverhead, chunked: bool = False,
                prompt_from: str = "stages") -> dict[str, Any]:
    """The load-dependent terms measured on one probe phase (see the module docstring)."""
    records = phase["records"]
    bare = replay(setup, topology, records, profile, link, routing="polled")
    rate = bare["token_rate"]
    model = latency_model(setup, profile)
    rebuilt = steps.reconstruct(records)
    ratios = steps.decode_ratios(rebuilt, model)
    decode = float(np.median(ratios)) if len(ratios) >= steps.MIN_STEPS else None
    # the workers' own step metrics, where the phase recorded them
    measured = step_metrics.measured(phase) if prompt_from == "metrics" else None
    if measured:
        decode = step_metrics.decode_factor(measured, bare) or decode
    scale = {role: 1.0 if role == "prefill" else (decode or 1.0) for role in _roles(topology)}
    logs, sim = _prompt_logs(setup, topology, records, profile, link, base, scale, chunked)
    point: dict[str, Any] = {"phase": phase["phase"], "token_rate": rate,
                             "num_requests": len(records), "decode_factor": decode,
                             "num_decode_steps": len(ratios), "prompt_factor": None,
                             "prompt_log_residuals": [], "handoff_latency_s": None,
                             "join_s": None}
    if len(logs) >= 5:
        mu, var = float(np.mean(logs)), float(np.var(logs))
        point["prompt_factor"] = float(np.exp(mu + var / 2))
        point["prompt_log_residuals"] = (logs - mu).tolist()
    if prompt_from == "busy":
        point["prompt_factor"] = _busy_prompt_factor(phase, sim)
    elif measured:
        point["prompt_factor"] = step_metrics.prompt_factor(measured, sim)
    if topology != "2 mixed":
        lat = priced_handoff_latencies(records, int(profile["kv_bytes_per_token"]), link)
        point["handoff_latency_s"] = float(np.median(lat)) if lat else None
        joins = steps.join_costs(rebuilt, model, decode or 1.0)
        point["join_s"] = (max(float(np.median(joins)), 0.0)
                           if len(joins) >= 5 and overflow_share(records) <= MAX_JOIN_OVERFLOW
                           else None)
    return point


def overflow_share(records: list[dict[str, Any]]) -> float:
    """The share of a phase's requests the router prefilled on the decode worker because
    the prefill worker was saturated."""
    kinds = [(r.get("timeline") or {}).get("route_kind") for r in records]
    return kinds.count("local_prefill_saturated") / len(kinds) if kinds else 0.0


def line(points: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """Weighted least-squares line of `key` against token rate (slope >= 0), with the
    range of rates it was fitted on."""
    pts = [(p["token_rate"], p[key], p["num_requests"]) for p in points if p[key] is not None]
    if not pts:
        return None
    x, y, w = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
    w = w / w.sum()
    mx, my = float(w @ x), float(w @ y)
    var = float(w @ (x - mx) ** 2)
    slope = max(float(w @ ((x - mx) * (y - my))) / var, 0.0) if var > 0 else 0.0
    return {"at_zero": my - slope * mx, "per_token_rate": slope,
            "min_rate": float(x.min()), "max_rate": float(x.max())}


def at_rate(fitted: dict[str, Any] | None, rate: float, default: float) -> float:
    if fitted is None:
        return default
    x = min(max(rate, fitted["min_rate"]), fitted["max_rate"])
    return float(fitted["at_zero"] + fitted["per_token_rate"] * x)


def fit_by_steps(setup: Setup, topology: str, probe: list[dict[str, Any]],
                 profile: dict[str, Any], default_link: Link, chunked: bool = False,
                 prompt_from: str = "stages", step_gap: bool = False,
                 link_from: str = "excess") -> dict[str, Any]:
    """The terms for `topology` from its probe; `chunked`: the simulated prefill worker
    cuts prompts to its budget as the engine does (`SchedulerConfig.prefill_role_chunks`);
    `prompt_from`: the prompt factor from the prompt stages ("stages", the module
    docstring), from the prompt-computing workers' busy seconds ("busy",
    `_busy_prompt_factor`) or from the workers' step metrics ("metrics": the decode and
    prompt factors as measured / simulated step seconds, `step_metrics.decode_factor`
    and `prompt_factor`; phases recorded without them fall back to "stages"); the stage
    ratio is otherwise only used for the jitter. `step_gap`: also measure the engine
    loop's time between steps on the lone requests (`step_metrics.step_gap_s`; needs
    the metrics) and simulate it (`SchedulerConfig.step_gap_s`). `link_from`: the KV
    link's bandwidth from the lone requests' first-token excess ("excess", `fit.fit_link`)
    or from the handoffs the router timed on every clean phase ("timelines",
    `link_fit.fit_link_timelines`) or from the KV transfers the decode worker timed on
    them ("transfers", `link_fit.fit_link_transfers`; "busy_source": the same with a
    computing prefill worker's transfers priced apart)."""
    link_fits: dict[str, Callable[[list[dict[str, Any]], int, Link], dict[str, Any]]] = {
        "timelines": fit_link_timelines, "transfers": fit_link_transfers,
        "busy_source": functools.partial(fit_link_transfers, split_busy=True)}
    if link_from not in ("excess", *link_fits):
        raise ValueError(f"link_from must be 'excess', 'timelines', 'transfers' or "
                         f"'busy_source', got {link_from!r}")
    if prompt_from not in ("stages", "busy", "metrics"):
        raise ValueError(f"prompt_from must be 'stages', 'busy' or 'metrics', "
                         f"got {prompt_from!r}")
    kept, dropped = clean_phases(probe)
    phases = {p["phase"]: p for p in kept}
    out: dict[str, Any] = {"on": "calibration probe: " + ", ".join(phases),
                           "dropped_phases": dropped}
    link = default_link
    if topology != "2 mixed":
        kv_bytes = int(profile["kv_bytes_per_token"])
        out["handoff"] = (link_fits[link_from](kept, kv_bytes, default_link)
                          if link_from in link_fits else
                          fit_link(setup, phases["lone"]["records"], kv_bytes, default_link))
        link = Link(**out["handoff"]["link"])
    out["prefill"] = fit_prefill_scale(setup, phases["lone"]["records"], profile)
    base = ServingOverhead(prefill_scale=out["prefill"]["prefill_scale"])
    points = [phase_point(setup, topology, p, profile, link, base, chunked, prompt_from)
              for p in kept if p["phase"] == "lone" or p["phase"].startswith("poisson")]
    out["points"] = [{k: v for k, v in p.items() if k != "prompt_log_residuals"}
                     for p in points]
    out["lines"] = {key: line(points, key) for key in _KEYS}
    residuals = [x for p in points if p["phase"] != "lone" for x in p["prompt_log_residuals"]]
    sigma = float(np.std(residuals)) if len(residuals) >= 10 else 0.0
    base = dataclasses.replace(base, prefill_jitter_cv=round(float(np.sqrt(np.expm1(sigma**2))),
                                                             3))
    lone = phases["lone"]["records"]
    # the engine loop's time between steps, where the workers' step metrics tell it apart
    gap_s = step_metrics.step_gap_s(phases["lone"]) if step_gap else None
    out["step_gap_s"] = gap_s or 0.0
    terms = terms_at(out, base, link, 0.0)
    sim = replay(setup, topology, lone, profile, terms["link"], terms["overhead"],
                 terms["step_scale"], "polled", chunked, terms["step_gap_s"])
    real = tiled(real_arrays(lone), len(sim["ttft_s"]))
    ok = real["finished"] & sim["finished"]
    delivery_s = max(float(np.median((real["ttft_s"] - sim["ttft_s"])[ok])), 0.0)
    out.update({"chunk_prefill_role": chunked, "prompt_from": prompt_from,
                "link": link.to_dict(),
                "overhead": dataclasses.replace(base, delivery_s=delivery_s).to_dict()})
    return out


def terms_at(fitted: dict[str, Any], base: ServingOverhead, link: Link, rate: float,
             ) -> dict[str, Any]:
    """The simulator's inputs for a run offering `rate` output tokens per second."""
    lines = fitted["lines"]
    decode = at_rate(lines["decode_factor"], rate, 1.0)
    prompt = at_rate(lines["prompt_factor"], rate, 1.0)
    latency = at_rate(lines["handoff_latency_s"], rate, link.latency_s)
    join_s = at_rate(lines["join_s"], rate, 0.0)
    roles = ("mixed",) if "handoff" not in fitted else ("prefill", "decode")
    return {"overhead": dataclasses.replace(base, prefill_scale=base.prefill_scale * prompt),
            "step_scale": {r: 1.0 if r == "prefill" else decode for r in roles},
            "link": dataclasses.replace(link, latency_s=max(latency, 0.0),
                                        join_s=max(join_s, 0.0)),
            "step_gap_s": float(fitted.get("step_gap_s", 0.0)),
            "factors": {"decode": decode, "prompt": prompt, "handoff_latency_s": latency,
                        "join_s": join_s}}


def replay_run(setup: Setup, topology: str, records: list[dict[str, Any]],
               profile: dict[str, Any], fitted: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """A judged run through the simulator with the terms read at its offered rate."""
    link = Link(**fitted["link"])
    rate = replay(setup, topology, records, profile, link, routing="polled")["token_rate"]
    terms = terms_at(fitted, ServingOverhead.from_dict(fitted["overhead"]), link, rate)
    sim = replay(setup, topology, records, profile, terms["link"], terms["overhead"],
                 terms["step_scale"], "polled", bool(fitted.get("chunk_prefill_role")),
                 terms["step_gap_s"])
    return sim, {**terms["factors"], "token_rate": rate}
