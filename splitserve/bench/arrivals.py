"""Arrival processes (Poisson, constant, bursts) and production-trace replay with scaling.

Every process returns arrival offsets in seconds from the start of the run, bounded by a
request count and/or a duration. Traces (Azure LLM 2023 CSV, Mooncake JSONL) also carry
each request's lengths; they are scaled to what this machine can serve, and the scaling
travels with the result (`TraceScaling.describe()`), because a scaled replay is a
different experiment from the original.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

ARRIVAL_KINDS = ("poisson", "constant", "burst", "trace")
# Traces are read in place from the shared folder; the project never vendors copies.
DEFAULT_TRACE_DIR = os.path.join("..", "shared", "traces")


def arrival_offsets(
    kind: str,
    rate_rps: float,
    *,
    num_requests: int | None,
    duration_s: float | None,
    seed: int = 0,
    burst_size: int = 8,
) -> list[float]:
    """Offsets of up to `num_requests` arrivals falling before `duration_s`.

    poisson: exponential gaps with mean 1/rate. constant: one every 1/rate s. burst:
    `burst_size` requests at once every burst_size/rate s (same mean rate).
    """
    if kind not in ("poisson", "constant", "burst"):
        raise ValueError(f"arrival kind {kind!r} not in poisson|constant|burst")
    if not rate_rps > 0 or math.isinf(rate_rps):
        raise ValueError(f"rate must be a positive finite requests/s, got {rate_rps}")
    if num_requests is None and duration_s is None:
        raise ValueError("bound the run: give num_requests and/or duration_s")
    if num_requests is not None and num_requests < 0:
        raise ValueError(f"num_requests must be >= 0, got {num_requests}")
    if duration_s is not None and duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if burst_size < 1:
        raise ValueError(f"burst_size must be >= 1, got {burst_size}")
    rng = random.Random(seed)
    offsets: list[float] = []
    t = 0.0
    while num_requests is None or len(offsets) < num_requests:
        # computed from the index, not accumulated, so float error cannot add an arrival
        if kind == "burst":
            t = (len(offsets) // burst_size) * burst_size / rate_rps
        elif kind == "constant":
            t = len(offsets) / rate_rps
        if duration_s is not None and t >= duration_s:
            break
        offsets.append(t)
        if kind == "poisson":
            t += rng.expovariate(rate_rps)
    return offsets


@dataclass(frozen=True)
class TraceRequest:
    arrival_s: float
    input_len: int
    output_len: int


@dataclass(frozen=True)
class TraceScaling:
    """How a trace was cut and scaled: window [start_s, start_s + duration_s) in trace
    time, lengths divided by `length_scale`, time compressed by `speed` (2 = twice as
    many requests per second as the original)."""

    path: str
    start_s: float = 0.0
    duration_s: float | None = None
    length_scale: float = 1.0
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.start_s < 0:
            raise ValueError(f"trace window start must be >= 0 s, got {self.start_s}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"trace window duration must be > 0 s, got {self.duration_s}")
        if self.length_scale < 1.0:
            raise ValueError(f"length scale is a divisor >= 1, got {self.length_scale}")
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")

    def describe(self) -> str:
        end = "end" if self.duration_s is None else f"{self.start_s + self.duration_s:g}s"
        return (
            f"trace {os.path.basename(self.path)} window [{self.start_s:g}s, {end}), "
            f"lengths / {self.length_scale:g}, speed x{self.speed:g}"
        )

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "description": self.describe()}


def _parse_azure_time(text: str) -> float:
    # Azure stamps carry 7 fractional digits; datetime takes at most 6.
    head, _, frac = text.strip().partition(".")
    stamp = datetime.strptime(head, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    base = stamp.timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def _read_raw(path: str) -> list[tuple[float, int, int]]:
    """(timestamp_s, input_len, output_len) rows in file order."""
    rows: list[tuple[float, int, int]] = []
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            needed = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
            if not needed <= set(reader.fieldnames or ()):
                raise ValueError(f"{path}: expected CSV columns {sorted(needed)}")
            for row in reader:
                rows.append(
                    (
                        _parse_azure_time(row["TIMESTAMP"]),
                        int(row["ContextTokens"]),
                        int(row["GeneratedTokens"]),
                    )
                )
    elif path.endswith(".jsonl"):
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                try:
                    rows.append(
                        (obj["timestamp"] / 1000.0, int(obj["input_length"]),
                         int(obj["output_length"]))
                    )
                except KeyError as exc:
                    raise ValueError(f"{path}:{line_no}: missing field {exc}") from None
    else:
        raise ValueError(f"unknown trace format {path!r}: expected .csv (Azure) or .jsonl")
    return rows


def read_trace(scaling: TraceScaling, max_requests: int | None = None) -> list[TraceRequest]:
    """Requests in the scaling's window, re-timed from the window start and scaled.

    Lengths are divided by `length_scale` (rounded up, at least 1); offsets are
    (t - t_first - start_s) / speed.
    """
    if not os.path.isfile(scaling.path):
        raise ValueError(f"trace file not found: {scaling.path}")
    rows = _read_raw(scaling.path)
    if not rows:
        return []
    t0 = min(r[0] for r in rows) + scaling.start_s
    t_end = math.inf if scaling.duration_s is None else t0 + scaling.duration_s
    out: list[TraceRequest] = []
    for ts, input_len, output_len in sorted(rows, key=lambda r: r[0]):
        if ts < t0:
            continue
        if ts >= t_end or (max_requests is not None and len(out) >= max_requests):
            break
        out.append(
            TraceRequest(
                arrival_s=(ts - t0) / scaling.speed,
                input_len=max(1, math.ceil(input_len / scaling.length_scale)),
                output_len=max(1, math.ceil(output_len / scaling.length_scale)),
            )
        )
    return out
