"""Statistics over request records: percentiles, throughput, SLO attainment, goodput.

Pure functions, no I/O. Definitions (the ones DistServe and vLLM's benchmark use):

- TTFT: send -> first output chunk. TPOT: (e2e - ttft) / (output_len - 1) per request.
  ITL: every gap between consecutive output chunks, pooled over requests.
- SLO attainment: the fraction of *sent* requests that completed and met both the TTFT and
  the TPOT SLO; a failed request is a miss. A request with one output token has no TPOT
  and is judged on TTFT alone.
- Goodput: the highest request rate whose attainment is >= a target (e.g. 0.9), found by
  `goodput_search` over a rate -> attainment function that is assumed to fall with rate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from splitserve.bench.records import RequestRecord

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float | None:
    """q-th percentile with linear interpolation between order statistics (numpy's
    default method); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def describe(values: Sequence[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99, max (None when empty)."""
    out: dict[str, float | None] = {
        "mean": sum(values) / len(values) if values else None,
    }
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(values, q)
    out["max"] = max(values) if values else None
    return out


@dataclass(frozen=True)
class SLO:
    """Latency objectives in seconds; None means "not judged"."""

    ttft_s: float | None = None
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("ttft_s", self.ttft_s), ("tpot_s", self.tpot_s)):
            if value is not None and not value > 0:
                raise ValueError(f"SLO {name} must be > 0 seconds, got {value}")

    def met_by(self, record: RequestRecord) -> bool:
        if not record.success or record.ttft_s is None:
            return False
        if self.ttft_s is not None and record.ttft_s > self.ttft_s:
            return False
        tpot = record.tpot_s
        return self.tpot_s is None or tpot is None or tpot <= self.tpot_s


def attainment(records: Iterable[RequestRecord], slo: SLO) -> float | None:
    """Fraction of records (failed ones included, as misses) meeting the SLO."""
    records = list(records)
    if not records:
        return None
    return sum(slo.met_by(r) for r in records) / len(records)


def summarize(
    records: Sequence[RequestRecord], duration_s: float, slo: SLO | None = None
) -> dict[str, Any]:
    """Counts, throughput and latency summaries of one run (see docs/bench.md)."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    sent = [r for r in records if r.send_s is not None]
    done = [r for r in sent if r.success]
    failed = [r for r in sent if not r.success]
    ttft = [r.ttft_s for r in done if r.ttft_s is not None]
    tpot = [t for t in (r.tpot_s for r in done) if t is not None]
    itl = [gap for r in done for gap in r.itl_s]
    e2e = [r.e2e_s for r in done if r.e2e_s is not None]
    output_tokens = sum(r.output_len for r in done)
    errors = Counter(r.error or "no end of stream" for r in failed)
    return {
        "sent": len(sent),
        "completed": len(done),
        "failed": len(failed),
        "duration_s": duration_s,
        "request_throughput_rps": len(done) / duration_s,
        "output_throughput_tps": output_tokens / duration_s,
        "total_input_tokens": sum(r.input_len for r in done),
        "total_output_tokens": output_tokens,
        "ttft_s": describe(ttft),
        "tpot_s": describe(tpot),
        "itl_s": describe(itl),
        "e2e_s": describe(e2e),
        # how late the client sent against the plan: large values mean the load generator,
        # not the server, limited the offered rate
        "send_lag_s": describe([r.send_s - r.scheduled_s for r in sent if r.send_s is not None]),
        "slo": None if slo is None else {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s},
        "slo_attainment": None if slo is None else attainment(sent, slo),
        "errors": dict(errors.most_common(10)),
    }


@dataclass
class GoodputResult:
    """`goodput_rps` is the highest rate seen meeting the target (0.0 if none did);
    `runs` lists every (rate, attainment) evaluated, in order."""

    goodput_rps: float
    target: float
    runs: list[tuple[float, float]] = field(default_factory=list)


def goodput_search(
    attainment_at: Callable[[float], float],
    *,
    min_rate: float,
    max_rate: float,
    target: float = 0.9,
    start_rate: float | None = None,
    max_runs: int = 8,
    rel_tol: float = 0.05,
) -> GoodputResult:
    """Highest rate in [min_rate, max_rate] with attainment >= target.

    Bracketing: from `start_rate` (default min_rate), double while the rate passes (or
    halve while it fails) until a passing and a failing rate bracket the answer or a bound
    is hit; then bisect the bracket until it is narrower than `rel_tol` of the passing
    rate. At most `max_runs` calls of `attainment_at` (each is a benchmark run).
    """
    if not 0 < min_rate <= max_rate:
        raise ValueError(f"need 0 < min_rate <= max_rate, got {min_rate}, {max_rate}")
    if not 0 < target <= 1:
        raise ValueError(f"target attainment must be in (0, 1], got {target}")
    if max_runs < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    result = GoodputResult(0.0, target)

    def passes(rate: float) -> bool:
        value = attainment_at(rate)
        result.runs.append((rate, value))
        return value >= target

    rate = min(max(start_rate or min_rate, min_rate), max_rate)
    good: float | None = None
    bad: float | None = None
    while len(result.runs) < max_runs:
        if passes(rate):
            good = rate
            if rate >= max_rate or bad is not None:
                break
            rate = min(rate * 2, max_rate)
        else:
            bad = rate
            if rate <= min_rate or good is not None:
                break
            rate = max(rate / 2, min_rate)
    while (
        good is not None
        and bad is not None
        and len(result.runs) < max_runs
        and bad - good > rel_tol * good
    ):
        mid = (good + bad) / 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    result.goodput_rps = good or 0.0
    return result
