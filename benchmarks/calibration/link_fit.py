"""The KV link's time per byte, read off the handoffs the router timed on the probe.

`fit.fit_link` fits the link on the lone requests' first-token-to-second-token excess:
twelve requests over a narrow range of prompt lengths, whose excess also holds the decode
worker's first step. Across the committed measurements that fit ranged from 65 MB/s to
56 GB/s, and the mixed-long measurement with five repeats (ml9) priced its handoffs at
65 MB/s with no latency (a negative intercept) while its judged runs moved ~375 MB/s:
the simulated link, one transfer at a time per decode worker, then queued the long
prompts' KV and put p90 TPOT 17-36% high.

This fit measures the handoff itself (the prefill engine's first token to the KV landing
on the decode worker, `handoffs`) on every clean probe phase, and takes the time per byte
as the median slope between two handoffs of the same phase (Theil-Sen within phases): a
phase's load shifts all its handoffs alike (that is the latency line fit_steps draws
against load), and the median ignores the few handoffs that queued behind another. On
the 29 committed split measurements it lands within a median factor of 1.13 of the slope
inside the judged runs (318-661 MB/s); on the first measurement after it, on another machine,
2.2x fast (1,735 against ~790 MB/s; docs/planner.md). Guard: with fewer than MIN_HANDOFFS
handoffs, or a slope that is not positive, the default link is kept.

`fit_link_transfers` reads the KV transfer alone (the decode worker's pull, without the
router hops around it), pooled over the phases, and can price a transfer out of a
computing prefill worker apart (`source_busy_shares`): the `steps_load_xfer` and
`steps_load_busy_source` variants.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks.calibration.replay import Link

MIN_HANDOFFS = 10
# `fit_link_transfers` pairs two transfers only when their sizes differ by this many
# tokens' KV: closer pairs' slopes are mostly their timing jitter
MIN_PAIR_TOKENS = 16
# a transfer more than this share of whose seconds the prefill engine spent computing
# another prompt is "out of a busy source" (`fit_link_transfers(split_busy=True)`)
BUSY_SHARE = 0.5


def _handoff_s(r: dict[str, Any]) -> float | None:
    tl = r.get("timeline") or {}
    first, landed = tl.get("prefill.engine_first_token_s"), tl.get("decode.kv_transfer_end_s")
    if r["success"] and first is not None and landed is not None:
        return float(landed - first)
    return None


def handoffs(records: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """(seconds from the prefill engine's first token to the KV landing on the decode
    worker, prompt tokens) of every successful disaggregated request."""
    return [(s, r["input_len"]) for r in records if (s := _handoff_s(r)) is not None]


def handoff_latencies(records: list[dict[str, Any]], kv_bytes_per_token: int,
                      bytes_s: float) -> list[float]:
    """Each handoff's seconds beyond its KV bytes at `bytes_s`."""
    return [s - n * kv_bytes_per_token / bytes_s for s, n in handoffs(records)]


def within_phase_slope(groups: list[list[tuple[float, float]]],
                       min_dx: float = 0.0) -> float | None:
    """The median of (y2 - y1) / (x2 - x1) over every two (y, x) points of the same group
    whose x differ (by at least `min_dx` where it is positive); None without such a pair."""
    slopes = []
    for group in groups:
        if len(group) < 2:
            continue
        y, x = (np.array(v, dtype=float) for v in zip(*group, strict=True))
        i, j = np.triu_indices(len(x), 1)
        dx = x[j] - x[i]
        ok = np.abs(dx) >= min_dx if min_dx > 0 else dx != 0
        slopes.append((y[j] - y[i])[ok] / dx[ok])
    pooled = np.concatenate(slopes) if slopes else np.array([])
    return float(np.median(pooled)) if len(pooled) else None


def fit_link_timelines(phases: list[dict[str, Any]], kv_bytes_per_token: int,
                       default: Link) -> dict[str, Any]:
    """The link (`replay.Link`'s bytes_s and latency_s) from the probe phases' handoffs:
    bandwidth from the within-phase slope, latency the lone requests' median handoff
    beyond its bytes (the load-dependent part is fit_steps' latency line)."""
    groups = [[(s, float(n * kv_bytes_per_token)) for s, n in handoffs(p["records"])]
              for p in phases]
    num = sum(len(g) for g in groups)
    slope = within_phase_slope(groups) if num >= MIN_HANDOFFS else None
    out: dict[str, Any] = {"method": "timelines", "num_requests": num,
                           "slope_s_per_byte": slope}
    if slope is None or slope <= 0:
        out["fallback"] = "default link (too few handoffs or a slope that is not positive)"
        out["link"] = {"bytes_s": default.bytes_s, "latency_s": default.latency_s}
        return out
    bytes_s = 1.0 / slope
    lone = [x for p in phases if p["phase"] == "lone"
            for x in handoff_latencies(p["records"], kv_bytes_per_token, bytes_s)]
    latency = float(np.median(lone)) if lone else default.latency_s
    out["link"] = {"bytes_s": bytes_s, "latency_s": max(latency, 0.0)}
    return out


def transfers(records: list[dict[str, Any]], kv_bytes_per_token: int) -> list[tuple[float, float]]:
    """(seconds, bytes) of every successful disaggregated request's KV transfer as the
    decode worker timed it (its pull's start to its end: no router hop, no queue for the
    decode worker's admission)."""
    return [t for r in records if (t := _transfer(r, kv_bytes_per_token)) is not None]


def _transfer_span(r: dict[str, Any]) -> tuple[float, float] | None:
    """A successful request's KV pull, start and end, on its own clock (from its send)."""
    tl = r.get("timeline") or {}
    start, end = tl.get("decode.kv_transfer_start_s"), tl.get("decode.kv_transfer_end_s")
    if not (r["success"] and start is not None and end is not None):
        return None
    return float(start), float(end)


def _transfer(r: dict[str, Any], kv_bytes_per_token: int) -> tuple[float, float] | None:
    span = _transfer_span(r)
    if span is None:
        return None
    tl = r["timeline"]
    num_bytes = tl.get("decode.kv_transfer_bytes") or r["input_len"] * kv_bytes_per_token
    return span[1] - span[0], float(num_bytes)


def _median_slope(points: list[tuple[float, float]], min_dx: float) -> float | None:
    """Theil-Sen over `points` pooled as one group; None with fewer than MIN_HANDOFFS."""
    return within_phase_slope([points], min_dx) if len(points) >= MIN_HANDOFFS else None


def fit_link_transfers(phases: list[dict[str, Any]], kv_bytes_per_token: int,
                       default: Link, split_busy: bool = False) -> dict[str, Any]:
    """The link from the KV transfers the decode worker timed on every clean probe phase,
    pooled: bandwidth from the median slope between two transfers (Theil-Sen), latency
    the lone requests' median handoff beyond its bytes, as `fit_link_timelines`.

    Why the transfers and not the handoffs: a handoff (prefill first token -> KV landed)
    also holds two HTTP hops through the router and the decode worker's admission, whose
    load-dependent delays swamp the bytes term on short prompts; the transfer alone is
    latency + bytes / rate, with the rate set by the cores at both ends (a prefill worker
    computing the next prompt while its KV goes out halves it or worse). Pooling every
    phase prices the mix of idle and busy sources the probe saw; on the 35 committed split
    measurements before it, this lands within 1.25x of the same fit over their judged
    runs' transfers at 29 (0.73-1.28x, median 0.87; benchmarks/calibration_transfers.py).

    `split_busy`: price the two apart instead (`Link.busy_bytes_s`,
    `busy_extra_latency_s`): the rate from the transfers out of an idle source (the
    pooled rate where they give no positive slope: the probe's idle transfers are mostly
    small), the busy rate from those out of a computing one (`source_busy_shares` >
    BUSY_SHARE), and the busy extra latency as the median over the loaded phases of the
    difference between their busy and idle handoffs' medians beyond their priced bytes
    (within a phase, so that the phase's load is not read as the source's). Busy
    transfers too few or with no positive slope: the pooled fit alone."""
    min_dx = MIN_PAIR_TOKENS * kv_bytes_per_token
    points = [x for p in phases for x in transfers(p["records"], kv_bytes_per_token)]
    out: dict[str, Any] = {"method": "transfers", "num_requests": len(points),
                           "slope_s_per_byte": None}
    slope = _median_slope(points, min_dx)
    out["slope_s_per_byte"] = slope
    if slope is None or slope <= 0:
        out["fallback"] = "default link (too few transfers or a slope that is not positive)"
        out["link"] = {"bytes_s": default.bytes_s, "latency_s": default.latency_s}
        return out
    bytes_s = 1.0 / slope
    busy: dict[str, Any] = {}
    if split_busy:
        busy = _busy_terms(phases, kv_bytes_per_token, min_dx, bytes_s)
        out["busy_source"] = busy
        bytes_s = busy.get("bytes_s", bytes_s)
    link = Link(bytes_s, 0.0, busy_bytes_s=busy.get("busy_bytes_s"),
                busy_extra_latency_s=busy.get("busy_extra_latency_s", 0.0))
    lone = [x for p in phases if p["phase"] == "lone"
            for x in priced_handoff_latencies(p["records"], kv_bytes_per_token, link)]
    latency = float(np.median(lone)) if lone else default.latency_s
    out["link"] = dataclasses.replace(link, latency_s=max(latency, 0.0)).to_dict()
    return out


def _busy_terms(phases: list[dict[str, Any]], kv_bytes_per_token: int,
                min_dx: float, pooled_bytes_s: float) -> dict[str, Any]:
    """`fit_link_transfers`' split_busy terms; only the counts where the busy transfers
    are too few or give no positive slope."""
    idle: list[tuple[float, float]] = []
    busy: list[tuple[float, float]] = []
    for p in phases:
        for t, share in zip(transfers(p["records"], kv_bytes_per_token),
                            source_busy_shares(p["records"]), strict=True):
            (busy if share > BUSY_SHARE else idle).append(t)
    out: dict[str, Any] = {"num_idle": len(idle), "num_busy": len(busy)}
    idle_slope, busy_slope = _median_slope(idle, min_dx), _median_slope(busy, min_dx)
    if not (busy_slope and busy_slope > 0):
        return out
    if idle_slope is not None and idle_slope > 0:
        out.update(bytes_s=1.0 / idle_slope, idle_rate_from="idle transfers")
    else:
        out.update(bytes_s=pooled_bytes_s, idle_rate_from="pooled transfers")
    out["busy_bytes_s"] = 1.0 / busy_slope
    link = Link(out["bytes_s"], 0.0, busy_bytes_s=out["busy_bytes_s"])
    diffs = []
    for p in phases:
        if p["phase"] == "lone":
            continue
        split = _priced_handoffs(p["records"], kv_bytes_per_token, link)
        b = [lat for lat, is_busy in split if is_busy]
        i = [lat for lat, is_busy in split if not is_busy]
        if len(b) >= 5 and len(i) >= 5:
            diffs.append(float(np.median(b) - np.median(i)))
    out["busy_extra_latency_s"] = max(float(np.median(diffs)), 0.0) if diffs else 0.0
    out["num_phases_for_latency"] = len(diffs)
    return out


def _priced_handoffs(records: list[dict[str, Any]], kv_bytes_per_token: int,
                     link: Link) -> list[tuple[float, bool]]:
    """(seconds beyond the KV's price on `link`, out of a busy source) of each handoff:
    a busy source's at the link's busy rate and extra latency."""
    shares = _busy_share_by_index(records)
    out = []
    for index, r in enumerate(records):
        handoff_s = _handoff_s(r)
        if handoff_s is None:
            continue
        num_bytes = r["input_len"] * kv_bytes_per_token
        busy_bytes_s = link.busy_bytes_s
        if busy_bytes_s is not None and shares.get(index, 0.0) > BUSY_SHARE:
            out.append((handoff_s - num_bytes / busy_bytes_s - link.busy_extra_latency_s, True))
        else:
            out.append((handoff_s - num_bytes / link.bytes_s, False))
    return out


def priced_handoff_latencies(records: list[dict[str, Any]], kv_bytes_per_token: int,
                             link: Link) -> list[float]:
    """Each handoff's seconds beyond its KV's price on `link` (`handoff_latencies` where
    the link has no busy-source terms)."""
    if link.busy_bytes_s is None:
        return handoff_latencies(records, kv_bytes_per_token, link.bytes_s)
    return [lat for lat, _ in _priced_handoffs(records, kv_bytes_per_token, link)]


def source_busy_shares(records: list[dict[str, Any]]) -> list[float]:
    """For each of `transfers(records)`, in order: the share of its seconds during which
    the prefill engine computed some request's prompt (any record's first scheduling to
    its first token): a transfer out of a busy prefill worker shares its core with a
    prompt step. `records` are one run's: their times are on its clock."""
    return list(_busy_share_by_index(records).values())


def _busy_share_by_index(records: list[dict[str, Any]]) -> dict[int, float]:
    spans = []
    for r in records:
        tl = r.get("timeline") or {}
        a, b = tl.get("prefill.engine_first_scheduled_s"), tl.get("prefill.engine_first_token_s")
        if a is not None and b is not None:
            spans.append((a + r["send_s"], b + r["send_s"]))
    out = {}
    for index, r in enumerate(records):
        span = _transfer_span(r)
        if span is None:
            continue
        s, e = span[0] + r["send_s"], span[1] + r["send_s"]
        overlap = sum(max(0.0, min(e, b) - max(s, a)) for a, b in spans)
        out[index] = min(overlap / (e - s), 1.0) if e > s else 0.0
    return out
