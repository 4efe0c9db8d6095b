"""The front end's CPU per output token, measured on the calibration probe (the
`steps_load_host` variant's `HostShare`).

The router relays every output token and the bench client reads it, on the same two cores
the workers compute on. Each probe phase records every process's CPU seconds
(`snapshot.py`); the router's and the client's together, against the phase's duration and
its output tokens, give a fixed share of a core (the router's polling, the client's
loop) and the CPU seconds per token (least squares, both >= 0). Only the per-token part
follows the token stream: the fixed part is already inside every fitted price.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.calibration.fit_prompt import nonneg_lstsq
from benchmarks.calibration.replay import prompt_marks
from benchmarks.calibration.snapshot import contaminated

FRONT_END = ("router", "bench client")
MIN_GAUGE = 20  # gauge requests a front-end latency distribution needs


def cpu_per_token(probe: list[dict[str, Any]]) -> dict[str, Any]:
    """{"cpu_per_token_s", "idle_cores", "num_phases"} over the clean probe phases that
    recorded process CPU (0 per token without any)."""
    rows = []
    for phase in probe:
        cpu = phase.get("process_cpu_s") or {}
        if contaminated(phase) or not all(name in cpu for name in FRONT_END):
            continue
        tokens = sum(r["output_len"] or 0 for r in phase["records"] if r["success"])
        rows.append((phase["duration_s"], tokens, sum(cpu[name] for name in FRONT_END)))
    if not rows:
        return {"cpu_per_token_s": 0.0, "idle_cores": 0.0, "num_phases": 0}
    x = np.array([[d, t] for d, t, _ in rows], dtype=float)
    y = np.array([c for _, _, c in rows], dtype=float)
    idle, per_token = nonneg_lstsq(x, y, np.ones(len(rows)))
    return {"cpu_per_token_s": float(per_token), "idle_cores": float(idle),
            "num_phases": len(rows)}


def latency_s(records: list[dict[str, Any]]) -> np.ndarray:
    """Each successful request's front-end latency: its client TTFT less the worker's part
    (the prompt's worker received it -> its engine's first token; router timeline). What
    is left is the client -> router -> worker hop and the first token's way back, which
    the simulator prices as one constant delivery delay fitted on the lone requests."""
    out = []
    for r in records:
        marks = prompt_marks(r, "worker_received_s", "engine_first_token_s")
        if marks and r["success"] and r.get("ttft_s") is not None:
            out.append(r["ttft_s"] - (marks[1] - marks[0]))
    return np.array(out, dtype=float)


def excess_latency_s(gauge_records: list[dict[str, Any]], lone_median_s: float,
                     num: int, seed: int = 0) -> np.ndarray | None:
    """`num` draws of the gauge's front-end latency beyond the lone requests' median (the
    part of the delivery delay the fit already holds): the front end's event loops queue
    under load (on a mixed worker that also streams every decode token, +4-10 ms at the
    median and +12-20 ms at p90 at 2-6 req/s here). None with fewer than MIN_GAUGE."""
    lat = latency_s(gauge_records)
    if len(lat) < MIN_GAUGE:
        return None
    return np.random.default_rng(seed).choice(lat - lone_median_s, size=num)

