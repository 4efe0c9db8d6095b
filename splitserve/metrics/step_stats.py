"""Cumulative statistics of a worker's engine steps: how many, how long, how big.

Every step is one of three kinds: `prefill` (prompt tokens only), `decode` (decode
sequences only) or `mixed` (both, as chunked prefill batches them). Per kind the worker
keeps a step-duration histogram (its count is the number of steps, its sum the step
seconds); over all steps with decodes a decode-batch-size histogram, and over all steps
with prompt tokens a prompt-tokens-per-step histogram. That is what tells batching and
scheduling (how many steps, how full) apart from the cost of a step (how long).

Pure data: no clock, no threads of its own. `StepStats.record` runs on the engine thread
and `snapshot` on the scrape thread, so both hold a lock (a scrape never sees a step half
recorded). The bucket edges are fixed so that every worker's series aggregate.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

STEP_KINDS = ("prefill", "decode", "mixed")

# Upper bucket edges. Step durations: from a sub-millisecond GPU decode step to a
# multi-second CPU prompt step. Batch sizes and prompt tokens: powers of two up to the
# largest max_num_seqs / token budget a worker is likely to run with.
STEP_SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
# every size up to 32: a step's cost jumps between neighbouring sizes (here 18 ms at 16
# sequences, 24 ms at 17: the CPU matmul switches kernels; on GPUs, CUDA-graph padding),
# so pricing steps over the real spread of batches needs each size apart
DECODE_BATCH_BUCKETS: tuple[float, ...] = (
    *range(1, 33), 40, 48, 56, 64, 96, 128, 192, 256, 384, 512, 1024,
)
PREFILL_TOKENS_BUCKETS: tuple[float, ...] = (
    16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768,
)


@dataclass
class Histogram:
    """A Prometheus-style histogram: per-bucket counts (not cumulative; the last bucket is
    +Inf) and the sum of the observed values. A value equal to an edge falls in that
    edge's bucket (Prometheus' `le`)."""

    upper_bounds: tuple[float, ...]
    bucket_counts: list[int] = field(default_factory=list)
    sum_value: float = 0.0

    def __post_init__(self) -> None:
        edges = self.upper_bounds
        if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"histogram edges must be non-empty and increasing: {edges}")
        if not all(math.isfinite(e) for e in edges):
            raise ValueError(f"histogram edges must be finite (+Inf is implicit): {edges}")
        if not self.bucket_counts:
            self.bucket_counts = [0] * (len(edges) + 1)
        elif len(self.bucket_counts) != len(edges) + 1:
            raise ValueError(f"{len(self.bucket_counts)} bucket counts for {len(edges)} "
                             "edges (+Inf needs one more)")

    def observe(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"histogram value must be >= 0, got {value}")
        self.bucket_counts[bisect.bisect_left(self.upper_bounds, value)] += 1
        self.sum_value += value

    @property
    def count(self) -> int:
        return sum(self.bucket_counts)

    @property
    def mean(self) -> float | None:
        count = self.count
        return self.sum_value / count if count else None

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper edge, observations <= edge) per bucket, ending with (inf, count)."""
        out, total = [], 0
        for edge, n in zip((*self.upper_bounds, math.inf), self.bucket_counts, strict=True):
            total += n
            out.append((edge, total))
        return out

    def copy(self) -> Histogram:
        return Histogram(self.upper_bounds, list(self.bucket_counts), self.sum_value)


@dataclass(frozen=True)
class StepSnapshot:
    """A consistent copy of `StepStats` (what one scrape exports)."""

    step_seconds: dict[str, Histogram]
    decode_batch: Histogram
    prefill_tokens: Histogram

    def num_steps(self, kind: str) -> int:
        return self.step_seconds[kind].count

    def step_seconds_total(self, kind: str) -> float:
        return self.step_seconds[kind].sum_value


def step_kind(num_prefill_tokens: int, num_decode_seqs: int) -> str:
    """The kind of a step computing these tokens (ValueError for an empty step)."""
    if num_prefill_tokens < 0 or num_decode_seqs < 0:
        raise ValueError(f"token counts must be >= 0, got prefill={num_prefill_tokens} "
                         f"decode={num_decode_seqs}")
    if num_prefill_tokens and num_decode_seqs:
        return "mixed"
    if num_prefill_tokens:
        return "prefill"
    if num_decode_seqs:
        return "decode"
    raise ValueError("a step computes at least one token (prefill and decode both 0)")


class StepStats:
    """Cumulative step statistics of one engine (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._step_seconds = {kind: Histogram(STEP_SECONDS_BUCKETS) for kind in STEP_KINDS}
        self._decode_batch = Histogram(DECODE_BATCH_BUCKETS)
        self._prefill_tokens = Histogram(PREFILL_TOKENS_BUCKETS)

    def record(self, step_s: float, num_prefill_tokens: int, num_decode_seqs: int) -> None:
        """One step that took `step_s` seconds, computed `num_prefill_tokens` prompt
        tokens and one token for each of `num_decode_seqs` decoding sequences."""
        kind = step_kind(num_prefill_tokens, num_decode_seqs)
        if not (step_s >= 0 and math.isfinite(step_s)):
            raise ValueError(f"step seconds must be finite and >= 0, got {step_s}")
        with self._lock:
            self._step_seconds[kind].observe(step_s)
            if num_decode_seqs:
                self._decode_batch.observe(num_decode_seqs)
            if num_prefill_tokens:
                self._prefill_tokens.observe(num_prefill_tokens)

    def snapshot(self) -> StepSnapshot:
        with self._lock:
            return StepSnapshot({k: h.copy() for k, h in self._step_seconds.items()},
                                self._decode_batch.copy(), self._prefill_tokens.copy())
