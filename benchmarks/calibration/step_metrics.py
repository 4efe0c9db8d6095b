"""Measured engine steps (the workers' step metrics) against the simulator's steps.

Each run records every worker's `/metrics` before and after (`measure.py`); the
difference gives, per worker, the steps it ran by kind (prefill / decode / mixed), their
seconds, the decode sequences and prompt tokens summed over them (docs/metrics.md). The
simulator's replay of the same requests reports the same quantities
(`splitserve.planner.step_stats`). Side by side, per role, they split a TPOT error into
its causes: a different number of steps or batch size (batching and scheduling) or a
different step duration (the cost profile and serving terms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from splitserve.planner.step_stats import STEP_KINDS, StepSummary

_STEPS = "splitserve_worker_steps_total{kind=%s}"
_SECONDS = "splitserve_worker_step_duration_seconds_sum{kind=%s}"
_DECODE_SEQS = "splitserve_worker_decode_batch_size_sum"
_PREFILL_TOKENS = "splitserve_worker_prefill_tokens_per_step_sum"
_BATCH_BUCKET = "splitserve_worker_decode_batch_size_bucket{le="
# what measure.py keeps of each worker's scrape for these (counts, sums, batch buckets)
SCRAPED_PREFIXES = ("splitserve_worker_steps_total",
                    "splitserve_worker_step_duration_seconds_sum",
                    "splitserve_worker_decode_batch_size_sum",
                    "splitserve_worker_prefill_tokens_per_step_sum",
                    # the spread of decode batches (`decode_batch_histogram`)
                    "splitserve_worker_decode_batch_size_bucket")


def measured(run: dict[str, Any]) -> dict[str, StepSummary] | None:
    """Per role, the run's measured steps (its workers added up); None if the run was
    recorded without step metrics (raw files from before they existed)."""
    deltas: dict[str, float] = run.get("phase_metrics") or {}
    workers = sorted({key.split(":", 1)[0] for key in deltas
                      if key.split(":", 1)[1].startswith(SCRAPED_PREFIXES[0])})
    if not workers:
        return None
    by_role: dict[str, list[StepSummary]] = {}
    for name in workers:
        def get(metric: str, name: str = name) -> float:
            return float(deltas.get(f"{name}:{metric}", 0.0))

        summary = StepSummary({k: round(get(_STEPS % k)) for k in STEP_KINDS},
                              {k: max(get(_SECONDS % k), 0.0) for k in STEP_KINDS},
                              round(get(_DECODE_SEQS)), round(get(_PREFILL_TOKENS)))
        by_role.setdefault(name.split("-")[0], []).append(summary)
    return {role: StepSummary.total(parts) for role, parts in by_role.items()}


def decode_batch_histogram(run: dict[str, Any]) -> dict[int, float] | None:
    """Steps per decode batch size on the roles that decode (a split's prefill role left
    out), from the workers' cumulative batch-size buckets: a bucket wider than one size
    spreads its steps evenly over its sizes. None if the run was recorded without them
    (raw files from before the eleventh calibration measurement)."""
    deltas: dict[str, float] = run.get("phase_metrics") or {}
    by_worker: dict[str, dict[float, float]] = {}
    for key, value in deltas.items():
        name, metric = key.split(":", 1)
        if metric.startswith(_BATCH_BUCKET) and not name.startswith("prefill"):
            edge = float(metric[len(_BATCH_BUCKET):].rstrip("}"))
            by_worker.setdefault(name, {})[edge] = value
    if not by_worker:
        return None
    out: dict[int, float] = {}
    for cumulative in by_worker.values():
        below, prev = 0.0, 0
        for edge in sorted(e for e in cumulative if math.isfinite(e)):
            count = max(cumulative[edge] - below, 0.0)
            sizes = range(prev + 1, int(edge) + 1)
            for size in sizes:
                out[size] = out.get(size, 0.0) + count / len(sizes)
            below, prev = max(cumulative[edge], below), int(edge)
    return {b: n for b, n in sorted(out.items()) if n > 0}


def averaged(draws: list[dict[str, StepSummary]]) -> dict[str, StepSummary]:
    """Several simulated draws of one run added up per role (`per_run` divides counts by
    the number of draws again; the means are unaffected)."""
    return {role: StepSummary.total(d[role] for d in draws) for role in draws[0]}


def per_run(summary: StepSummary, num_runs: int) -> dict[str, Any]:
    """`summary.to_dict()` with step counts per run (a pool of `num_runs` runs/draws)."""
    out = summary.to_dict()
    out["num_steps"] = {k: round(v / num_runs, 1) for k, v in out["num_steps"].items()}
    out["num_prefill_tokens"] = round(out["num_prefill_tokens"] / num_runs, 1)
    return out


def pool(rows: list[dict[str, Any]], arrays: list[dict[str, Any]],
         variant: str) -> list[dict[str, Any]]:
    """Per (topology, rate, role): the clean repeats' measured steps against the variant's
    simulated steps of the same repeats, as per-run step counts, mean step seconds by
    kind and mean decode batch. `arrays[i]` holds row i's "measured_steps" (`measured`)
    and per variant the replay's "step_stats" (summed over its "num_draws"); rows without
    measured step metrics are skipped."""
    groups: dict[tuple[str, float], list[int]] = {}
    for i, row in enumerate(rows):
        if arrays[i].get("measured_steps") and "step_stats" in arrays[i].get(variant, {}):
            groups.setdefault((row["topology"], row["rate_rps"]), []).append(i)
    out = []
    for (topology, rate), every in groups.items():
        members = [i for i in every if not rows[i].get("contaminated")] or every
        for role in arrays[members[0]]["measured_steps"]:
            real = StepSummary.total(arrays[i]["measured_steps"][role] for i in members)
            sim = StepSummary.total(arrays[i][variant]["step_stats"][role] for i in members)
            num_draws = sum(arrays[i][variant]["num_draws"] for i in members)
            out.append({"topology": topology, "rate_rps": rate, "role": role,
                        "num_repeats": len(members),
                        "all_contaminated": all(rows[i].get("contaminated") for i in every),
                        "real": per_run(real, len(members)), "sim": per_run(sim, num_draws)})
    return out


def _ratio(sim: float | None, real: float | None) -> str:
    if sim is None or real is None or real == 0:
        return ""
    return f" ({sim / real - 1:+.0%})"


def _cell(real: float | None, sim: float | None, scale: float, digits: int) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v * scale:.{digits}f}"

    return f"{fmt(real)} / {fmt(sim)}{_ratio(sim, real)}"


def markdown(pooled: Iterable[dict[str, Any]]) -> str:
    """Measured / simulated per (topology, rate, role): steps per run by kind, mean step
    ms by kind, mean decode batch."""
    kinds = STEP_KINDS
    lines = ["| topology | rate req/s | role | repeats | "
             + " | ".join(f"{k} steps" for k in kinds) + " | "
             + " | ".join(f"{k} step ms" for k in kinds) + " | decode batch |",
             "|---|---:|---|---:|" + "---|" * (2 * len(kinds) + 1)]
    for g in pooled:
        r, s = g["real"], g["sim"]
        cells = [_cell(r["num_steps"][k], s["num_steps"][k], 1, 0) for k in kinds]
        cells += [_cell(r["mean_step_s"][k], s["mean_step_s"][k], 1e3, 1) for k in kinds]
        cells.append(_cell(r["mean_decode_batch"], s["mean_decode_batch"], 1, 2))
        used = f"{g['num_repeats']}" + ("*" if g["all_contaminated"] else "")
        lines.append(f"| {g['topology']} | {g['rate_rps']:g} | {g['role']} | {used} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def decode_factor(real: dict[str, StepSummary], sim: dict[str, Any]) -> float | None:
    """Measured / simulated mean pure-decode step seconds over the roles that decode: what
    the profiled decode steps must be multiplied by (`sim`: a replay of the same
    requests, its "step_stats" summed over "num_draws")."""
    def mean(parts: Iterable[StepSummary]) -> float | None:
        return StepSummary.total(parts).mean_step_s("decode")

    roles = [r for r in real if r != "prefill" and r in sim["step_stats"]]
    measured = mean(real[r] for r in roles)
    simulated = mean(sim["step_stats"][r] for r in roles)
    return measured / simulated if measured and simulated else None


def prompt_factor(real: dict[str, StepSummary], sim: dict[str, Any]) -> float | None:
    """Measured / simulated seconds of the steps with prompt tokens (prefill and mixed
    kinds) on the prompt-computing roles (a split's decode worker only prefills short
    prompts, left out): what the simulated prompt steps must be multiplied by. Totals,
    not means per step: the simulator may batch the same prompt tokens into fewer or
    more steps."""
    def seconds(s: StepSummary) -> float:
        return s.step_s.get("prefill", 0.0) + s.step_s.get("mixed", 0.0)

    roles = [r for r in real if r != "decode" and r in sim["step_stats"]]
    measured = sum(seconds(real[r]) for r in roles)
    simulated = sum(seconds(sim["step_stats"][r]) for r in roles) / sim["num_draws"]
    return measured / simulated if measured > 0 and simulated > 0 else None


MIN_GAPS = 20


def step_gap_s(phase: dict[str, Any]) -> float | None:
    """Seconds the engine loop spends between decode steps, outside them: the mean gap
    between a request's consecutive decode tokens (the client's inter-token gaps after
    the second token: one step of its worker each) minus the workers' mean decode step
    (their metrics). Meant for the probe's lone requests, whose every decode step makes
    exactly one token, so the two means are over the same steps. None without metrics."""
    real = measured(phase)
    if not real:
        return None
    step_s = StepSummary.total(s for r, s in real.items() if r != "prefill").mean_step_s(
        "decode")
    gaps = [g for r in phase["records"] if r["success"] for g in (r.get("itl_s") or [])[1:]]
    if step_s is None or len(gaps) < MIN_GAPS:
        return None
    return max(sum(gaps) / len(gaps) - step_s, 0.0)
