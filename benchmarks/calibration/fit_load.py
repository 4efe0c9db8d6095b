"""Step prices per step kind and a load-dependent engine-loop gap, fitted on the probe's
step metrics (the `steps_load` variant).

The fourth measurement (docs/calibration_history.md) showed where `steps_metrics` missed: prompt steps
priced by a line through noisy probe points, decode steps priced by a factor read at
the offered rate, and the engine loop's time between steps measured on lone requests
only (0.3-0.4 ms; the client's mean inter-token gap exceeded the workers' mean decode
step by 1.3-2.7 ms under load, which this fit attributes mostly to per-sequence step
cost and to the client's mean weighing larger steps more). This fit keeps
`fit_steps.fit_by_steps` (chunked prefill role, metrics) for the link, the KV handoff
latency, the join cost, `prefill_scale`, the jitter and the delivery delay, and replaces
three terms, each from the clean probe phases' step metrics only:

1. **Decode steps** (decode kind, on the roles that decode): per phase the measured mean
   decode step D and mean batch B; the profile's price P of a decode step of B sequences
   at the phase's mean KV tokens per sequence. Fitted D = scale * P + per_seq_s * B
   (least squares weighted by steps, per_seq_s >= 0): a price that grows with the
   requests in flight beyond what the profile's own batch slope says, not one read at an
   offered rate (`ServingOverhead.step_scale` per role and `per_seq_s`).
2. **Prompt steps** (prefill and mixed kinds, on the roles that compute prompts): one
   factor, the Poisson phases pooled: their measured prompt-step seconds over the
   simulated ones (the simulation already holding the decode price above), on top of
   the lone requests' `prefill_scale`. A ratio of totals over ~200 prompt steps instead
   of a line through two or three per-phase ratios.
3. **Loop gap**: per phase, the mean TPOT the simulation (with 1 and 2) still lacks, as
   gap = gap_s + gap_per_seq_s * B (least squares weighted by requests, both >= 0):
   every decode token waits one gap per step, so a TPOT shortfall is a per-step gap
   (`SchedulerConfig.step_gap_s` / `step_gap_per_seq_s`; the simulator adds it per step
   for the sequences that step decodes). Refitted once with the gap in place (the gap
   each phase needs = the fitted gap at its batch + the TPOT still lacking), since
   requests that take longer batch more.

No judged run enters any of these (the probe has its own seeds and arrival patterns).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from benchmarks.calibration import fit_prompt, fit_steps, step_metrics
from benchmarks.calibration import step_noise as step_noise_fit
from benchmarks.calibration.fit import tiled
from benchmarks.calibration.fit_prompt import nonneg_lstsq
from benchmarks.calibration.replay import Link, latency_model, real_arrays, replay
from benchmarks.calibration.setup import Setup
from splitserve.planner import HostShare, ServingOverhead
from splitserve.planner.step_stats import StepSummary

MIN_DECODE_STEPS = 50


def ctx_per_seq(records: list[dict[str, Any]]) -> float:
    """Mean KV tokens of a decoding sequence over all its decode steps: (input + k) for
    k = 1 .. output - 1, weighted by decode steps."""
    num = den = 0.0
    for r in records:
        if not r["success"] or not r.get("output_len") or r["output_len"] < 2:
            continue
        n = r["output_len"] - 1
        num += n * r["input_len"] + n * (n + 1) / 2
        den += n
    return num / den if den else 0.0


def profile_decode_s(model: Any, batch: float, ctx_tokens: float) -> float:
    """The profile's decode step of `batch` sequences (fractional: interpolated between
    the whole batches around it) of `ctx_tokens` KV tokens each."""
    lo = max(int(math.floor(batch)), 1)
    hi = max(lo + 1, 2)
    w = min(max(batch - lo, 0.0), 1.0)

    def at(n: int) -> float:
        return float(model.step_s(0, 0.0, 0, n, int(round(n * ctx_tokens))))

    return (1 - w) * at(lo) + w * at(hi)


def _decoding(measured: dict[str, StepSummary]) -> StepSummary:
    return StepSummary.total(s for role, s in measured.items() if role != "prefill")


def decode_points(setup: Setup, phases: list[dict[str, Any]], profile: dict[str, Any],
                  ) -> list[dict[str, Any]]:
    """Per phase with step metrics and enough decode steps: its measured mean decode step,
    mean batch and the profile's price of that batch."""
    model = latency_model(setup, profile)
    out = []
    for phase in phases:
        measured = step_metrics.measured(phase)
        if not measured:
            continue
        dec = _decoding(measured)
        n = dec.num_steps.get("decode", 0)
        mean_s, batch = dec.mean_step_s("decode"), dec.mean_decode_batch
        if n < MIN_DECODE_STEPS or mean_s is None or batch is None:
            continue
        out.append({"phase": phase["phase"], "num_steps": n, "batch": batch,
                    "real_s": mean_s,
                    "profile_s": profile_decode_s(model, batch, ctx_per_seq(phase["records"]))})
    return out


def fit_decode(points: list[dict[str, Any]]) -> dict[str, float]:
    """D = scale * P + per_seq_s * B over the points (scale 1, per-seq 0 without any)."""
    if not points:
        return {"scale": 1.0, "per_seq_s": 0.0}
    x = np.array([[p["profile_s"], p["batch"]] for p in points])
    y = np.array([p["real_s"] for p in points])
    beta = nonneg_lstsq(x, y, np.array([p["num_steps"] for p in points], dtype=float))
    if beta[0] <= 0:  # never a free step: fall back to a pure factor
        beta = np.array([float(y @ x[:, 0]) / float(x[:, 0] @ x[:, 0]), 0.0])
    return {"scale": float(beta[0]), "per_seq_s": float(beta[1])}


def prompt_seconds(measured: dict[str, StepSummary], sim: dict[str, Any]) -> tuple[float,
                                                                                     float]:
    roles = [r for r in measured if r != "decode" and r in sim["step_stats"]]

    def seconds(s: StepSummary) -> float:
        return s.step_s.get("prefill", 0.0) + s.step_s.get("mixed", 0.0)

    return (sum(seconds(measured[r]) for r in roles),
            sum(seconds(sim["step_stats"][r]) for r in roles) / sim["num_draws"])


def terms(fitted: dict[str, Any], rate: float) -> dict[str, Any]:
    """The simulator's inputs for a run offering `rate` output tokens per second: the
    base fit's link, handoff and join read at the rate, this fit's step prices and gap."""
    link = Link(**fitted["base"]["link"])
    base = fit_steps.terms_at(fitted["base"], ServingOverhead.from_dict(fitted["overhead"]),
                              link, rate)
    dec = fitted["decode"]
    # the speed factors (gauge.scaled) scale a prompt step's fixed part with its price
    overhead = dataclasses.replace(
        base["overhead"], per_seq_s=dec["per_seq_s"],
        prefill_scale=fitted["overhead"]["prefill_scale"] * fitted["prompt_factor"],
        prefill_step_s=fitted["overhead"].get("prefill_step_s", 0.0) * fitted["prompt_factor"])
    scale = {role: 1.0 if role == "prefill" else dec["scale"] for role in base["step_scale"]}
    h = fitted.get("handoff_factor", 1.0)  # gauge.scaled: the KV link's speed of the moment
    link = (base["link"] if h == 1.0 else
            dataclasses.replace(base["link"], bytes_s=base["link"].bytes_s / h,
                                latency_s=base["link"].latency_s * h))
    return {"overhead": overhead, "step_scale": scale, "link": link,
            "gap": (fitted["gap"]["gap_s"], fitted["gap"]["per_seq_s"]),
            "factors": {**base["factors"], "decode": dec["scale"],
                        "prompt": fitted["prompt_factor"]}}


def replay_fitted(setup: Setup, topology: str, records: list[dict[str, Any]],
            profile: dict[str, Any], fitted: dict[str, Any], rate: float,
            ) -> dict[str, Any]:
    t = terms(fitted, rate)
    host = HostShare(**fitted["host"]) if fitted.get("host") else None
    return replay(setup, topology, records, profile, t["link"], t["overhead"],
                  t["step_scale"], "polled", True, step_gap_s=t["gap"][0],
                  step_gap_per_seq_s=t["gap"][1], host=host,
                  saturated_num_waiting=fitted.get("saturated_num_waiting", 0),
                  continuation_prompt_scale=fitted.get("continuation_prompt_scale", 1.0))


def offered_rate(setup: Setup, topology: str, records: list[dict[str, Any]],
          profile: dict[str, Any], fitted: dict[str, Any]) -> float:
    return float(replay(setup, topology, records, profile, Link(**fitted["base"]["link"]),
                        routing="polled")["token_rate"])


def _tpot_shortfall(setup: Setup, topology: str, phase: dict[str, Any],
                    profile: dict[str, Any], fitted: dict[str, Any], rate: float,
                    ) -> float | None:
    sim = replay_fitted(setup, topology, phase["records"], profile, fitted, rate)
    real = tiled(real_arrays(phase["records"]), len(sim["tpot_s"]))
    ok = (real["finished"] & sim["finished"] & np.isfinite(real["tpot_s"])
          & np.isfinite(sim["tpot_s"]))
    if ok.sum() < 5:
        return None
    return float(np.mean(real["tpot_s"][ok]) - np.mean(sim["tpot_s"][ok]))


def _fit_gap(setup: Setup, topology: str, phases: list[dict[str, Any]],
             profile: dict[str, Any], fitted: dict[str, Any], rates: dict[str, float],
             ) -> dict[str, Any]:
    """gap_s + per_seq_s * batch (both >= 0) through the gap each phase needs: the gap
    already in `fitted` at its batch plus the TPOT the simulation still lacks."""
    gap_s, per_seq_s = fitted["gap"]["gap_s"], fitted["gap"]["per_seq_s"]
    pts = []
    for phase in phases:
        measured = step_metrics.measured(phase)
        batch = _decoding(measured).mean_decode_batch if measured else None
        short = _tpot_shortfall(setup, topology, phase, profile, fitted, rates[phase["phase"]])
        if batch is not None and short is not None:
            pts.append({"phase": phase["phase"], "batch": batch, "shortfall_s": short,
                        "gap_s": gap_s + per_seq_s * batch + short,
                        "num_requests": len(phase["records"])})
    if not pts:
        return {"gap_s": 0.0, "per_seq_s": 0.0, "points": []}
    x = np.array([[1.0, p["batch"]] for p in pts])
    y = np.array([p["gap_s"] for p in pts])
    beta = nonneg_lstsq(x, y, np.array([p["num_requests"] for p in pts], dtype=float))
    return {"gap_s": float(beta[0]), "per_seq_s": float(beta[1]), "points": pts}


def fit_by_load(setup: Setup, topology: str, probe: list[dict[str, Any]],
                profile: dict[str, Any], default_link: Link, affine: bool = False,
                continuation: bool = False, step_noise: bool = False,
                link_from: str = "excess") -> dict[str, Any]:
    """The `steps_load` terms for `topology` from its probe (see the module docstring).
    `affine`: the lone requests' prompt price is `fit_prompt.fit_prompt_affine`'s factor and fixed
    part (where the probe has long lone prompts) instead of `prefill_scale` alone; the
    Poisson phases' factor goes on top of both, as before. `continuation`: steps that only
    continue started prompts priced at `fit_prompt.fit_continuation_scale`'s factor of the
    lone price (where the probe has the `lone_chunked` phase), in every replay after it.
    `step_noise`: the prompt-step jitter measured on the Poisson phases' isolated real
    steps (`step_noise.measure`) instead of the prompt stages' residual spread.
    `link_from`: where the KV link's bandwidth comes from (`fit_steps.fit_by_steps`)."""
    base = fit_steps.fit_by_steps(setup, topology, probe, profile, default_link,
                                  chunked=True, prompt_from="metrics", link_from=link_from)
    kept, _ = fit_steps.clean_phases(probe)
    noise = step_noise_fit.measure(setup, profile, kept) if step_noise else None
    if noise is not None:
        base = {**base, "overhead": {**base["overhead"],
                                     "prefill_jitter_cv": noise["prefill_jitter_cv"]}}
    points = decode_points(setup, kept, profile)
    fitted: dict[str, Any] = {"on": base["on"], "dropped_phases": base["dropped_phases"],
                              "base": base, "overhead": base["overhead"],
                              "decode": {**fit_decode(points), "points": points},
                              "prompt_factor": 1.0, "gap": {"gap_s": 0.0, "per_seq_s": 0.0}}
    if step_noise:
        fitted["step_noise"] = noise
    rates = {p["phase"]: offered_rate(setup, topology, p["records"], profile, fitted) for p in kept}
    if affine:
        lone_all = [r for p in kept if p["phase"] in ("lone", "lone_long") for r in p["records"]]
        prompt = fit_prompt.fit_prompt_affine(setup, lone_all, profile)
        fitted["prompt_affine"] = prompt
        if prompt is not None:
            fitted["overhead"] = base["overhead"] = {
                **base["overhead"], "prefill_scale": prompt["scale"],
                "prefill_step_s": prompt["step_s"]}
    chunked = [r for p in probe if p["phase"] == "lone_chunked" for r in p["records"]]
    cont = (fit_prompt.fit_continuation_scale(setup, chunked, profile,
                                              base["overhead"]["prefill_scale"])
            if continuation else None)
    if cont is not None:
        fitted["continuation"] = cont
        fitted["continuation_prompt_scale"] = cont["continuation_prompt_scale"]
    real_s = sim_s = 0.0
    for phase in kept:
        measured = step_metrics.measured(phase)
        if phase["phase"].startswith("poisson") and measured:
            sim = replay_fitted(setup, topology, phase["records"], profile, fitted,
                          rates[phase["phase"]])
            r, s = prompt_seconds(measured, sim)
            real_s, sim_s = real_s + r, sim_s + s
    fitted["prompt_factor"] = real_s / sim_s if real_s > 0 and sim_s > 0 else 1.0
    fitted["prompt_seconds"] = {"measured_s": real_s, "simulated_s": sim_s}
    first = _fit_gap(setup, topology, kept, profile, fitted, rates)
    fitted["gap"] = first
    # a gap lengthens requests, which then batch more: refit what is still missing
    second = _fit_gap(setup, topology, kept, profile, fitted, rates)
    fitted["gap"] = {**second, "first_fit": first}
    # the delivery delay: what the lone requests' median TTFT still lacks
    lone = next(p for p in kept if p["phase"] == "lone")["records"]
    fitted["overhead"] = {**base["overhead"], "delivery_s": 0.0}
    sim = replay_fitted(setup, topology, lone, profile, fitted, rates["lone"])
    real = tiled(real_arrays(lone), len(sim["ttft_s"]))
    ok = real["finished"] & sim["finished"]
    fitted["overhead"]["delivery_s"] = max(float(np.median((real["ttft_s"]
                                                            - sim["ttft_s"])[ok])), 0.0)
    return fitted


def replay_run(setup: Setup, topology: str, records: list[dict[str, Any]],
               profile: dict[str, Any], fitted: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """A judged run through the simulator with the terms for its offered rate."""
    rate = offered_rate(setup, topology, records, profile, fitted)
    sim = replay_fitted(setup, topology, records, profile, fitted, rate)
    t = terms(fitted, rate)
    return sim, {**t["factors"], "gap_s": t["gap"][0], "gap_per_seq_s": t["gap"][1],
                 "per_seq_s": fitted["decode"]["per_seq_s"], "token_rate": rate}
