"""The simulated variants a calibration judges, and the probe fits each one needs."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.calibration import (
    fit,
    fit_load,
    fit_steps,
    front_end,
    gauge,
    replay,
    speed_probe,
)
from benchmarks.calibration.setup import TOPOLOGIES, Setup

# benchmarks/results/kv_transfer.json: the TCP KV path moved a 1 MiB handoff at ~0.18 GB/s
# end to end here; the bare ("profile") variant prices the handoff with it
DEFAULT_LINK = replay.Link(bytes_s=0.18e9, latency_s=0.002)
# variant: (simulated routing, fitted serving terms?, prompt-step scale?, prefill jitter?).
# profile: the bare measured profile, the kv_transfer.json link, the router picking by live
# request counts. uniform_steps: plus, fitted on the probe, the link, one step scale per
# role, step and per-sequence costs and the delivery delay (the previous calibration).
# calibrated: plus a prompt-step scale measured from the router timelines of the probe's
# lone requests, the rest refitted on top of it. calibrated_jitter: plus the prompt-step
# jitter measured from the timelines of the probe's Poisson phases.
# calibrated_jitter_polled: the same with the simulated router seeing worker load as the
# real one does (polled every 0.5 s, or its own in-flight count if higher).
# steps: the polled router, serving terms measured step by step on the clean probe phases
# (calibration/fit_steps.py) instead of fitted to aggregates.
VARIANT_SPECS = {"profile": ("requests", False, False, False),
                 "uniform_steps": ("requests", True, False, False),
                 "calibrated": ("requests", True, True, False),
                 "calibrated_jitter": ("requests", True, True, True),
                 "calibrated_jitter_polled": ("polled", True, True, True)}
# steps_chunked: the same with the simulated prefill worker cutting prompts to its budget
# as the engine does (found on the committed measurement after it was taken: see
# docs/calibration_history.md).
# steps_busy: steps_chunked with the prompt factor from the prompt-computing workers' busy
# seconds instead of the prompt stages (designed on the committed measurement, judged on
# the next one).
# steps_metrics: steps_chunked with the decode and prompt factors from the workers' step
# metrics on the probe (measured / simulated step seconds; calibration/step_metrics.py).
# steps_metrics_gap: plus the engine loop's time between steps, measured on the lone
# requests (client inter-token gaps minus the metrics' decode step) and simulated
# (`SchedulerConfig.step_gap_s`).
FIT_STEPS_VARIANTS = ("steps", "steps_chunked", "steps_busy", "steps_metrics",
                      "steps_metrics_gap")
# steps_load: steps_metrics with three terms refitted against load on the probe's step
# metrics (calibration/fit_load.py): decode steps priced as a factor on the profile plus a
# per-sequence cost, prompt steps by one factor pooled over the Poisson phases, and the
# engine loop's gap between steps as a fixed plus a per-decoding-sequence part
# (designed on the fourth measurement, see docs/calibration_history.md).
# steps_load_drift: steps_load with each rate's prompt price scaled by the prompt-speed
# drift measured right before that rate's judged runs (calibration/speed_probe.py: lone
# short prompts, own seeds; the ratio to the same probe taken right after the
# calibration probe). Raw files without the speed probe give drift 1 (= steps_load).
# steps_load_local: steps_load with each judged repeat's decode and prompt prices scaled
# by the machine's speed measured by a 20-s gauge at the judged rate right before it
# (calibration/gauge.py; raw files without gauges give steps_load). steps_load_oracle:
# the same factors read off the judged run's own step metrics: a diagnostic bound, not a
# prediction.
# steps_load_spread: steps_load_local with the gauge's decode factor read against the
# price over the gauge's (simulated) spread of batches instead of the price at its mean
# batch (gauge.spread_ratio; designed after the ninth measurement, see docs/planner.md).
# steps_load_hist: steps_load_spread over the gauge's measured spread of batches (its
# workers' batch-size histogram, every size apart up to 32) instead of the simulated one,
# with the profile refined where the step cost jumps between batch sizes (designed after
# the tenth measurement; raw files without the histogram give steps_load_spread).
# steps_load_replayed: steps_load_local with the gauge's decode factor read against a
# replay of the gauge (its measured mean decode step over the simulated one, as the prompt
# factor already was) instead of the price at its mean batch: each simulated step priced
# at its own batch, so no spread correction is needed.
# steps_load_host: steps_load_replayed with the front end on the workers' cores
# (`splitserve.planner.HostShare`): every step stretched by the share of a core the
# router and the client take at the current token rate, at the CPU per token they used
# on the probe (calibration/front_end.py). Both designed after the tenth measurement on
# the seventh to tenth (see docs/planner.md).
# steps_load_affine: steps_load_host with the lone requests' prompt price a factor and a
# fixed part per prompt step (fit_prompt.fit_prompt_affine, on short and long lone prompts:
# the lone_long probe phase, from the fifteenth measurement) instead of a factor alone;
# designed after the azure-code trace calibration, whose 512-token chunks the factor
# fitted on short prompts priced ~40% too dear. Raw files without lone_long give
# steps_load_host.
# steps_load_handoff: steps_load_host with the KV link's latency and time per byte scaled
# by the gauge's handoffs over their price (gauge.handoff_factor; a split fleet only):
# designed after the self-gauged trace measurement, where a saturated prefill worker
# sent 20-MB KV several times slower than the probe's lone requests priced it.
# steps_load_overflow: steps_load_host with the router's overflow rule simulated in the
# gauge's replay and the judged run's (a prompt arriving while the prefill worker has 8
# requests waiting is prefilled on the decode worker; `simulate(saturated_num_waiting=)`);
# designed after the mixed-long calibration, whose saturated prefill worker overflowed
# 16-18 prompts per run at 6 req/s. The probe fits stay without it.
# steps_load_continuation: steps_load_host with steps that only continue prompts begun in
# earlier steps (a long prompt's later chunks) priced at a factor of the lone prompt price
# (`SchedulerConfig.continuation_prompt_scale`), read off the `lone_chunked` probe phase
# (lone prompts of 3-4 chunks; fit_prompt.fit_continuation_scale) and used in every replay
# after it (the Poisson phases' prompt factor, the gauge, the judged run); designed after
# the mixed-long measurements, whose long prompts' later chunks ran at ~1.0x the profile
# against ~1.4x for a lone chunk. Raw files without the phase give steps_load_host.
# steps_load_cont_overflow: steps_load_continuation with the router's overflow rule as in
# steps_load_overflow (designed after the third mixed-long measurement, whose saturated
# point overflowed 11-14 prompts per repeat).
# steps_load_step_noise: steps_load_cont_overflow with the prompt-step jitter measured on
# the probe's isolated real prompt steps (calibration/step_noise.py: CV 0.12-0.21 on every
# measurement so far) instead of the spread of the prompt stages' residuals (0.25-0.55,
# mostly the simulated timeline drifting from the real one); designed after the fourth
# mixed-long measurement, whose simulated p90 TTFT ran 13% high against its twins.
# steps_load_front: steps_load_step_noise with every simulated TTFT plus a draw of the
# gauge's front-end latency (client TTFT less the worker's received -> first token, from
# its router timelines) beyond the lone requests' median, which the fitted delivery delay
# already holds (calibration/front_end.py): the router's and workers' event loops queue
# under load, on a mixed worker streaming every decode token by +4-10 ms at the median
# and +12-20 ms at p90; designed on the eleventh and fourteenth chat measurements, whose
# 2-mixed p90 TTFT steps_load_step_noise put 8-15% low.
# steps_load_link: steps_load_step_noise with the KV link's bandwidth from the handoffs the
# router timed on every clean probe phase (the median slope between two handoffs of one
# phase; calibration/link_fit.py) instead of the lone requests' first-token excess, which
# fitted ml9's link at 65 MB/s with no latency against ~375 MB/s in its judged runs;
# designed after the fifth mixed-long measurement (ml9), judged first on the next one.
# steps_load_xfer: steps_load_step_noise with the KV link's bandwidth from the transfers the
# decode worker timed on every clean probe phase, pooled (the median slope between two;
# calibration/link_fit.fit_link_transfers): the handoffs' router hops made the timelines
# slope negative on az8 and 2.2x fast on az6, while the transfers alone price 29 of the 35
# committed split measurements within 1.25x of their judged runs' own; designed after
# the ninth code-trace measurement (az9: step_noise p90 TPOT +66%, steps_load_link -31%).
# steps_load_busy_source: steps_load_xfer with a transfer out of a computing prefill worker
# priced apart (its rate and extra latency, `TransferConfig.busy_source_*`; fitted on the
# probe's transfers split by `link_fit.source_busy_shares`): the judged transfers of all
# 36 split measurements ran slower out of a busy source (35) with more latency (34), and
# the calm trace's handoffs are mostly such; designed after az11, judged first on az12.
VARIANTS = (*VARIANT_SPECS, *FIT_STEPS_VARIANTS, "steps_load", "steps_load_drift",
            "steps_load_local", "steps_load_oracle", "steps_load_spread", "steps_load_hist",
            "steps_load_replayed", "steps_load_host", "steps_load_affine",
            "steps_load_handoff", "steps_load_overflow", "steps_load_continuation",
            "steps_load_cont_overflow", "steps_load_step_noise", "steps_load_front",
            "steps_load_link", "steps_load_xfer", "steps_load_busy_source")
# the variants replayed at a gauge's speed: variant -> (fit, gauge.replay_run's options;
# "host": the front end's share of the workers' cores in the simulation)
GAUGED: dict[str, tuple[str, frozenset[str]]] = {
    "steps_load_local": ("steps_load", frozenset()),
    "steps_load_oracle": ("steps_load", frozenset({"oracle"})),
    "steps_load_spread": ("steps_load", frozenset({"spread"})),
    "steps_load_hist": ("steps_load", frozenset({"hist"})),
    "steps_load_replayed": ("steps_load", frozenset({"replayed"})),
    "steps_load_host": ("steps_load", frozenset({"replayed", "host"})),
    "steps_load_affine": ("steps_load_affine", frozenset({"replayed", "host"})),
    "steps_load_handoff": ("steps_load", frozenset({"replayed", "host", "handoff"})),
    "steps_load_overflow": ("steps_load", frozenset({"replayed", "host", "overflow"})),
    "steps_load_continuation": ("steps_load_continuation", frozenset({"replayed", "host"})),
    "steps_load_cont_overflow": ("steps_load_continuation",
                                 frozenset({"replayed", "host", "overflow"})),
    "steps_load_step_noise": ("steps_load_step_noise",
                              frozenset({"replayed", "host", "overflow"})),
    "steps_load_front": ("steps_load_step_noise",
                         frozenset({"replayed", "host", "overflow", "front"})),
    "steps_load_link": ("steps_load_link", frozenset({"replayed", "host", "overflow"})),
    "steps_load_xfer": ("steps_load_xfer", frozenset({"replayed", "host", "overflow"})),
    "steps_load_busy_source": ("steps_load_busy_source",
                               frozenset({"replayed", "host", "overflow"})),
}



def fits(setup: Setup, name: str, probe: list[dict[str, Any]], profile: dict[str, Any],
         speed: list[dict[str, Any]] | None = None) -> dict[Any, dict[str, Any]]:
    """Every fit the variants need for one topology, each on its probe only: per
    (simulated routing, prompt-step scale) for fit.py's variants (a single mixed worker,
    or none, routes alike), and "steps" (fit_steps.py)."""
    by_key: dict[Any, dict[str, Any]] = {}
    # the lone_chunked phase is steps_load_continuation's alone: every other fit as before
    full_probe, probe = probe, [p for p in probe if p["phase"] != "lone_chunked"]
    for routing, fitted, prefill, _ in VARIANT_SPECS.values():
        key = (routing if TOPOLOGIES[name][2] > 1 else "requests", prefill)
        if fitted and key not in by_key:
            by_key[key] = fit.fit_overheads(setup, name, probe, profile, DEFAULT_LINK, *key)
    by_key["steps"] = fit_steps.fit_by_steps(setup, name, probe, profile, DEFAULT_LINK)
    by_key["steps_chunked"] = fit_steps.fit_by_steps(setup, name, probe, profile, DEFAULT_LINK,
                                                     chunked=True)
    by_key["steps_busy"] = fit_steps.fit_by_steps(setup, name, probe, profile, DEFAULT_LINK,
                                                  chunked=True, prompt_from="busy")
    by_key["steps_metrics"] = fit_steps.fit_by_steps(setup, name, probe, profile,
                                                     DEFAULT_LINK, chunked=True,
                                                     prompt_from="metrics")
    by_key["steps_metrics_gap"] = fit_steps.fit_by_steps(setup, name, probe, profile,
                                                         DEFAULT_LINK, chunked=True,
                                                         prompt_from="metrics", step_gap=True)
    by_key["steps_load"] = fit_load.fit_by_load(setup, name, probe, profile, DEFAULT_LINK)
    by_key["steps_load_affine"] = fit_load.fit_by_load(setup, name, probe, profile,
                                                       DEFAULT_LINK, affine=True)
    by_key["steps_load_continuation"] = (
        fit_load.fit_by_load(setup, name, full_probe, profile, DEFAULT_LINK,
                             continuation=True)
        if len(full_probe) > len(probe) else by_key["steps_load"])
    by_key["steps_load_step_noise"] = fit_load.fit_by_load(
        setup, name, full_probe, profile, DEFAULT_LINK, continuation=True, step_noise=True)
    # the KV link variants; a fleet without a prefill pool hands nothing off: the same fit
    # as steps_load_step_noise
    for variant, link_from in (("steps_load_link", "timelines"), ("steps_load_xfer", "transfers"),
                               ("steps_load_busy_source", "busy_source")):
        by_key[variant] = (
            fit_load.fit_by_load(setup, name, full_probe, profile, DEFAULT_LINK,
                                 continuation=True, step_noise=True, link_from=link_from)
            if TOPOLOGIES[name][0] else by_key["steps_load_step_noise"])
    # `HostShare`'s fields: the front end's CPU per token on the probe, over the cores the
    # workers run on (one each)
    front = front_end.cpu_per_token(probe)
    by_key["host"] = {"cpu_per_token_s": front["cpu_per_token_s"],
                      "num_cores": sum(TOPOLOGIES[name])}
    by_key["front_end"] = front
    lone = front_end.latency_s([r for p in probe if p["phase"] == "lone" for r in p["records"]])
    by_key["front_lone"] = {"median_s": float(np.median(lone)) if len(lone) else 0.0,
                            "num_requests": len(lone)}
    # the speed probes are not judged requests: taken outside every judged run
    by_key["steps_load_drift"] = {
        **by_key["steps_load"],
        "drift": {str(rate): speed_probe.drift(setup, speed or [], profile, rate)
                  for rate in setup.rates}}
    return by_key


def with_drift(fitted: dict[str, Any], rate: float) -> dict[str, Any]:
    """`steps_load_drift`'s terms for the judged runs at `rate`: the prompt price scaled
    by the drift measured before them."""
    factor = fitted["drift"][str(rate)]["drift"]
    overhead = {**fitted["overhead"],
                "prefill_scale": fitted["overhead"]["prefill_scale"] * factor}
    return {**fitted, "overhead": overhead}


def simulate_variant(setup: Setup, name: str, run: dict[str, Any], profile: dict[str, Any],
             variant: str, by_key: dict[Any, dict[str, Any]],
             speed_from_judged: bool = False) -> tuple[dict[str, Any], Any]:
    """One variant's replay of one run: (per-request arrays, per-role step scale).
    `speed_from_judged`: a gauged variant reads the step speed off the judged run itself
    instead of its gauge (a diagnostic: what the forecast would be had the gauge measured
    the very minutes it forecasts; see benchmarks/calibration_overflow.py)."""
    if speed_from_judged and variant not in GAUGED:
        raise ValueError(f"{variant} does not read a gauge's speed")
    if variant == "steps_load":
        return fit_load.replay_run(setup, name, run["records"], profile, by_key[variant])
    if variant in GAUGED:
        key, options = GAUGED[variant]
        terms = by_key[key]
        if "host" in options:
            terms = {**terms, "host": by_key["host"]}
        if "overflow" in options:
            terms = {**terms, "saturated_num_waiting": replay.ROUTER_SATURATED_NUM_WAITING}
        if "front" in options:
            terms = {**terms, "front_lone_s": by_key["front_lone"]["median_s"]}
        if speed_from_judged:
            options = options | {"oracle"}
        return gauge.replay_run(setup, name, run, profile, terms,
                                **{o: True for o in options - {"host", "overflow"}})
    if variant == "steps_load_drift":
        sim, factors = fit_load.replay_run(setup, name, run["records"], profile,
                                           with_drift(by_key[variant], run["rate_rps"]))
        return sim, {**factors,
                     "drift": by_key[variant]["drift"][str(run["rate_rps"])]["drift"]}
    if variant in FIT_STEPS_VARIANTS:
        return fit_steps.replay_run(setup, name, run["records"], profile, by_key[variant])
    routing, fitted, prefill, jitter = VARIANT_SPECS[variant]
    if not fitted:
        return replay.replay(setup, name, run["records"], profile, DEFAULT_LINK,
                             routing=routing), None
    offered = replay.replay(setup, name, run["records"], profile, DEFAULT_LINK,
                            routing=routing)["token_rate"]
    f = by_key[(routing if TOPOLOGIES[name][2] > 1 else "requests", prefill)]
    overhead = replay.ServingOverhead.from_dict(f["overhead"])
    if not jitter:
        overhead = dataclasses.replace(overhead, prefill_jitter_cv=0.0)
    scale = fit.step_scale_at(f["step_scale_lines"], offered)
    return replay.replay(setup, name, run["records"], profile, replay.Link(**f["link"]),
                         overhead, scale, routing), scale
