"""Per-request outcome of a simulation and the SLO arithmetic on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from splitserve.planner.step_stats import StepTally


@dataclass(frozen=True)
class Slo:
    """Latency targets: a request meets the SLO if both its TTFT and its TPOT do, and a
    fleet meets it if at least `attainment` of the requests do (DistServe's definition)."""

    ttft_s: float
    tpot_s: float
    attainment: float = 0.9

    def __post_init__(self) -> None:
        if not self.ttft_s > 0:
            raise ValueError(f"TTFT SLO must be > 0 seconds, got {self.ttft_s}")
        if not self.tpot_s > 0:
            raise ValueError(f"TPOT SLO must be > 0 seconds, got {self.tpot_s}")
        if not 0 < self.attainment <= 1:
            raise ValueError(f"attainment target must be in (0, 1], got {self.attainment}")


@dataclass(frozen=True)
class SimResult:
    """Arrays have one entry per request; NaN where the request did not finish."""

    arrival_s: np.ndarray
    output_len: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    num_local_prefills: int = 0
    num_prefix_hit_tokens: int = 0
    num_steps: int = 0
    # when each request's first prompt chunk started computing (engine side, before any
    # delivery delay); NaN if never
    first_scheduled_s: np.ndarray | None = None
    # per instance: steps, step seconds and batch sizes by step kind (`by_role()`)
    steps: StepTally | None = None
    # per request: its prompt ran on a decode instance (short prompt, or the prefill pool
    # saturated) instead of being handed off; None where the simulation does not say
    local_prefill: np.ndarray | None = None

    @property
    def finished(self) -> np.ndarray:
        return ~np.isnan(self.finish_s)

    @property
    def num_unfinished(self) -> int:
        return int((~self.finished).sum())

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Mean time per output token after the first (0 for one-token outputs)."""
        steps = np.maximum(self.output_len - 1, 1)
        tpot = (self.finish_s - self.first_token_s) / steps
        return np.where(self.output_len > 1, tpot, np.where(self.finished, 0.0, np.nan))

    @property
    def e2e_s(self) -> np.ndarray:
        return self.finish_s - self.arrival_s

    def attainment(self, slo: Slo) -> float:
        """Fraction of all requests (unfinished ones count as misses) meeting both SLOs."""
        if len(self.arrival_s) == 0:
            return 1.0
        with np.errstate(invalid="ignore"):
            ok = self.finished & (self.ttft_s <= slo.ttft_s) & (self.tpot_s <= slo.tpot_s)
        return float(ok.mean())

    def summary(self, slo: Slo | None = None) -> dict[str, Any]:
        done = self.finished

        def pct(values: np.ndarray, q: float) -> float | None:
            v = values[done]
            return float(np.percentile(v, q)) if len(v) else None

        out: dict[str, Any] = {
            "num_requests": int(len(self.arrival_s)),
            "num_unfinished": self.num_unfinished,
            "num_local_prefills": self.num_local_prefills,
            "num_prefix_hit_tokens": self.num_prefix_hit_tokens,
            "p50_ttft_s": pct(self.ttft_s, 50),
            "p90_ttft_s": pct(self.ttft_s, 90),
            "p50_tpot_s": pct(self.tpot_s, 50),
            "p90_tpot_s": pct(self.tpot_s, 90),
            "p90_e2e_s": pct(self.e2e_s, 90),
            "mean_ttft_s": float(np.mean(self.ttft_s[done])) if done.any() else None,
        }
        if slo is not None:
            out["attainment"] = self.attainment(slo)
        return out
