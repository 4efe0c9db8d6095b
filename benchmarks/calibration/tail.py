"""Where a real TTFT goes, request by request, against the simulator's trace of the same run.

For every validation run of a mixed topology (records carry the router's timeline, see
`timelines.py`): the real TTFT split into

- `to_engine`: client send -> the request enters the engine (router, HTTP, the worker's
  asyncio side, waiting for the engine thread to take commands between steps);
- `queue`: engine arrival -> first scheduled;
- `prefill`: first scheduled -> the engine sampled the first token (all chunks);
- `delivery`: engine first token -> the client read it (worker -> router -> SSE);

and the simulated TTFT of the same request (same send time and lengths, the fitted
overheads) split into queue / prefill / delivery. The tail is the slowest 10% of real
TTFTs. A second replay forces every request onto the worker the router really picked
(`forced_routing`): if routing were the cause, that replay would close the tail gap.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.calibration.replay import POLL_INTERVAL_S, latency_model, sent
from benchmarks.calibration.setup import TOPOLOGIES, Setup
from splitserve.planner import Pool, Requests, SchedulerConfig, ServingOverhead
from splitserve.planner.overhead import with_overhead
from splitserve.planner.simulator import Simulation


class TracedSimulation(Simulation):
    """A `Simulation` that records each request's instance and first scheduled time, and
    can be told which mixed instance each request goes to (`route`)."""

    def __init__(self, *args: Any, route: list[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        n = len(self.input_len)
        self.route = route
        self.instance_of = [-1] * n
        self.first_sched_s = [float("nan")] * n

    def _arrive(self, rid: int, now: float) -> None:
        pool = self.by_role["mixed"]
        if self.route is not None and self.route[rid] >= 0:
            self.by_role["mixed"] = [pool[self.route[rid]]]
        try:
            super()._arrive(rid, now)
        finally:
            self.by_role["mixed"] = pool
        for k, inst in enumerate(pool):
            # (a request its instance started at once has left the queue for the step)
            if (inst.waiting and inst.waiting[-1] == rid) or any(
                    c[0] == rid for c in (inst.chunks if inst.busy else ())):
                self.instance_of[rid] = k

    def _start_step(self, inst: Any, now: float) -> None:
        super()._start_step(inst, now)
        for rid, _, _ in inst.chunks if inst.busy else ():
            if np.isnan(self.first_sched_s[rid]):
                self.first_sched_s[rid] = now


def _simulate(setup: Setup, rows: list[dict[str, Any]], profile: dict[str, Any],
              overhead: ServingOverhead, scale: float, route: list[int] | None,
              routing: str = "requests") -> dict[str, np.ndarray]:
    requests = Requests(
        arrival_s=np.array([r["send_s"] for r in rows], dtype=np.float64),
        input_len=np.array([r["input_len"] for r in rows], dtype=np.int64),
        output_len=np.array([max(r["output_len"] or r["requested_output_len"], 1)
                             for r in rows], dtype=np.int64))
    model = with_overhead(latency_model(setup, profile),
                          dataclasses.replace(overhead, step_scale=scale,
                                              prefill_jitter_cv=0.0, delivery_s=0.0))
    pools = [Pool("mixed", TOPOLOGIES["2 mixed"][2], model)]
    sched = SchedulerConfig(token_budget=setup.token_budget,
                            prefill_token_budget=setup.token_budget,
                            max_num_seqs=setup.max_num_seqs, chunked_prefill=True)
    sim = TracedSimulation(requests, pools, sched, routing=routing, route=route,
                           poll_interval_s=POLL_INTERVAL_S)
    result = sim.run()
    first = result.first_token_s
    arrival = requests.arrival_s
    return {"instance": np.array(sim.instance_of),
            "queue_s": np.array(sim.first_sched_s) - arrival,
            "prefill_s": first - np.array(sim.first_sched_s),
            "ttft_s": first - arrival + overhead.delivery_s}


def _real(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def get(key: str) -> np.ndarray:
        return np.array([(r.get("timeline") or {}).get(key, np.nan) for r in rows], dtype=float)

    ttft = np.array([r["ttft_s"] if r["ttft_s"] is not None else np.nan for r in rows])
    arrival, sched, first = get("full.engine_arrival_s"), get(
        "full.engine_first_scheduled_s"), get("full.engine_first_token_s")
    workers = [((r.get("timeline") or {}).get("workers") or {}).get("full") for r in rows]
    urls = sorted({w for w in workers if w})
    return {"ttft_s": ttft, "to_engine_s": arrival, "queue_s": sched - arrival,
            "prefill_s": first - sched, "delivery_s": ttft - first,
            "worker": np.array([urls.index(w) if w else -1 for w in workers]),
            "input_len": np.array([r["input_len"] for r in rows]),
            "send_s": np.array([r["send_s"] for r in rows]),
            "e2e_s": np.array([r["e2e_s"] if r["e2e_s"] is not None else np.nan
                               for r in rows])}


def _agreement(real: np.ndarray, sim: np.ndarray) -> float:
    """Share of requests on the same worker, under the better of the two labelings (the
    simulator's instance numbers are not the router's URLs)."""
    ok = (real >= 0) & (sim >= 0)
    same = float(np.mean(real[ok] == sim[ok])) if ok.any() else float("nan")
    return max(same, 1.0 - same)


def _in_flight(send: np.ndarray, e2e: np.ndarray) -> np.ndarray:
    end = send + np.nan_to_num(e2e, nan=0.0)
    return np.array([int(np.sum((send < t) & (end > t))) for t in send])


def _means(d: dict[str, np.ndarray], keys: tuple[str, ...], mask: np.ndarray,
           ) -> dict[str, float]:
    return {k: round(float(np.nanmean(d[k][mask])) * 1000, 1) for k in keys}


def analyse_run(setup: Setup, run: dict[str, Any], profile: dict[str, Any],
                overhead: ServingOverhead, scale: float) -> dict[str, Any] | None:
    rows = [r for r in sent(run["records"]) if r["success"]]
    if not rows or not any(r.get("timeline") for r in rows):
        return None
    real = _real(rows)
    sim = _simulate(setup, rows, profile, overhead, scale, None)
    # the real worker labels, in the labeling that best matches the simulator's
    agree_same = float(np.mean(real["worker"] == sim["instance"]))
    route = real["worker"] if agree_same >= 0.5 else np.where(real["worker"] >= 0,
                                                               1 - real["worker"], -1)
    forced = _simulate(setup, rows, profile, overhead, scale, [int(w) for w in route])
    tail = real["ttft_s"] >= np.nanpercentile(real["ttft_s"], 90)
    body = ~tail
    keys_real = ("ttft_s", "to_engine_s", "queue_s", "prefill_s", "delivery_s")
    keys_sim = ("ttft_s", "queue_s", "prefill_s")
    in_flight = _in_flight(real["send_s"], real["e2e_s"])

    def p90(x: np.ndarray) -> float:
        return round(float(np.nanpercentile(x, 90)) * 1000, 1)

    return {
        "rate_rps": run["rate_rps"], "repeat": run.get("repeat"), "num_requests": len(rows),
        "routing_agreement": round(_agreement(real["worker"], sim["instance"]), 3),
        "p90_ttft_ms": {"real": p90(real["ttft_s"]), "sim": p90(sim["ttft_s"]),
                        "sim_forced_routing": p90(forced["ttft_s"])},
        "tail_ms": {"real": _means(real, keys_real, tail), "sim": _means(sim, keys_sim, tail),
                    "sim_forced_routing": _means(forced, keys_sim, tail)},
        "body_ms": {"real": _means(real, keys_real, body), "sim": _means(sim, keys_sim, body),
                    "sim_forced_routing": _means(forced, keys_sim, body)},
        "tail_input_len_mean": round(float(np.mean(real["input_len"][tail])), 1),
        "tail_in_flight_mean": round(float(np.mean(in_flight[tail])), 1),
    }


def breakdown_markdown(rows: list[dict[str, Any]]) -> str:
    """Mean ms per stage over the slowest 10% of real TTFTs, real against simulated."""
    lines = ["| rate req/s | routing agree | p90 TTFT real / sim / sim forced | tail real: "
             "to engine + queue + prefill + delivery | tail sim: queue + prefill | tail sim "
             "forced: queue + prefill | tail in flight |",
             "|---|---:|---|---|---|---|---:|"]
    for row in rows:
        b = row.get("ttft_breakdown")
        if not b:
            continue
        p, t = b["p90_ttft_ms"], b["tail_ms"]
        r, s, f = t["real"], t["sim"], t["sim_forced_routing"]
        lines.append(
            f"| {b['rate_rps']:g} #{(b['repeat'] or 0) + 1} | {b['routing_agreement']:.0%} | "
            f"{p['real']} / {p['sim']} / {p['sim_forced_routing']} | "
            f"{r['to_engine_s']} + {r['queue_s']} + {r['prefill_s']} + {r['delivery_s']} | "
            f"{s['queue_s']} + {s['prefill_s']} | {f['queue_s']} + {f['prefill_s']} | "
            f"{b['tail_in_flight_mean']} |")
    return "\n".join(lines)


STAGES = (("client->router", None, "router_received_s"),
          ("router->worker", "router_routed_s", "{r}.worker_received_s"),
          ("worker->engine", "{r}.worker_received_s", "{r}.engine_arrival_s"),
          ("engine queue", "{r}.engine_arrival_s", "{r}.engine_first_scheduled_s"),
          ("prompt stage", "{r}.engine_first_scheduled_s", "{r}.engine_first_token_s"),
          ("engine->worker", "{r}.engine_first_token_s", "{r}.worker_first_token_s"),
          ("worker->client", "{r}.worker_first_token_s", None))


def stages(run: dict[str, Any]) -> dict[str, Any] | None:
    """A run's real TTFT split at every timeline mark (ms): the median over all requests
    and the mean over the slowest 10%. The role is the one that computed the prompt
    ("full" on a mixed worker, "prefill" in a split)."""
    rows = [r for r in sent(run["records"]) if r["success"] and r.get("timeline")]
    role = next((ro for ro in ("full", "prefill") if rows
                 and f"{ro}.engine_arrival_s" in rows[0]["timeline"]), None)
    if role is None:
        return None
    rows = [r for r in rows if f"{role}.engine_arrival_s" in r["timeline"]]
    ttft = np.array([r["ttft_s"] for r in rows], dtype=float)

    def mark(key: str | None, default: np.ndarray) -> np.ndarray:
        if key is None:
            return default
        return np.array([r["timeline"].get(key.format(r=role), np.nan) for r in rows],
                        dtype=float)

    tail = ttft >= np.percentile(ttft, 90)
    out: dict[str, Any] = {"role": role, "median_ms": {}, "tail_mean_ms": {}}
    for name, start, end in STAGES:
        span = mark(end, ttft) - mark(start, np.zeros(len(rows)))
        out["median_ms"][name] = round(float(np.nanmedian(span)) * 1000, 1)
        out["tail_mean_ms"][name] = round(float(np.nanmean(span[tail])) * 1000, 1)
    return out


def stages_markdown(rows: list[dict[str, Any]]) -> str:
    names = [s[0] for s in STAGES]
    lines = ["| topology | rate req/s | " + " | ".join(names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for row in rows:
        st = row.get("ttft_stages")
        if not st:
            continue
        cells = [f"{st['median_ms'][n]:g} / {st['tail_mean_ms'][n]:g}" for n in names]
        lines.append(f"| {row['topology']} | {row['rate_rps']:g} #{(row['repeat'] or 0) + 1} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
