"""Serving-path costs a bare step profile does not see, as optional simulator terms.

A measured profile (`splitserve profile`) times `ModelRunner.forward` + sampling alone. A
serving worker's step also schedules, detokenizes and hands every sampled token to the
HTTP side (which then competes for the same core), and each token then travels through the
router and its SSE stream to the client. `ServingOverhead` names those costs:

- `step_scale`: factor on every step's profiled time (a serving worker's steps can run
  slower than the profile's back-to-back ones: first steps after idle, other processes
  on the same core);
- `prefill_scale`: a further factor on every step that computes prompt tokens (a step
  that also decodes included). Measured here: a lone prompt's step in a serving worker
  took 1.3-1.4x the profile's back-to-back time of the same shape, while decode steps
  took ~1x, so one `step_scale` per pool cannot price both;
- `prefill_step_s`: fixed seconds added to every step that computes prompt tokens, on top
  of `prefill_scale`. A factor alone prices a short prompt's step and a 512-token chunk
  alike; measured here, serving added ~40% to the former and ~10% to the latter, a
  cost that is closer to fixed per prompt step than proportional to it;
- `step_s`: fixed seconds added to every engine step that does any work;
- `per_seq_s`: seconds added per decoding sequence in the step (detokenize, emit, relay);
- `prefill_jitter_cv`: coefficient of variation of a mean-1 lognormal factor drawn for
  every step that computes prompt tokens (seeded by `jitter_seed`): on a shared machine
  such steps vary, and queueing behind them turns that into longer TTFT tails than a
  deterministic simulation shows (measured here from the router's per-request timelines:
  a prompt step alone varies by ~5%, under 3-5 req/s by a CV of ~0.3-0.4). Pure decode steps are left exact: their variation
  averages out over a request's many tokens, and jittering them would widen the TPOT
  spread instead;
- `delivery_s`: seconds from the engine emitting a token to the client reading it
  (router + HTTP + SSE). It delays the first token and the last one alike, so it adds to
  TTFT and end-to-end latency and leaves TPOT unchanged.

The defaults (scale 1, the rest 0) are the simulator's behaviour without them. They are meant to be
measured on the serving stack (benchmarks/calibration/fit.py does it with a short probe
that is separate from the runs it then predicts), not tuned to the runs being judged.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

from splitserve.planner.cost_model import LatencyModel
from splitserve.planner.results import SimResult


@dataclass(frozen=True)
class ServingOverhead:
    """Seconds the serving path adds on top of a bare engine step (see module docstring)."""

    step_s: float = 0.0
    per_seq_s: float = 0.0
    delivery_s: float = 0.0
    step_scale: float = 1.0
    prefill_jitter_cv: float = 0.0
    jitter_seed: int = 0
    prefill_scale: float = 1.0
    prefill_step_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("step_s", "per_seq_s", "delivery_s", "prefill_step_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 seconds, got {value}")
        for name in ("step_scale", "prefill_scale"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if not math.isfinite(self.prefill_jitter_cv) or self.prefill_jitter_cv < 0:
            raise ValueError(f"prefill_jitter_cv must be a finite number >= 0, "
                             f"got {self.prefill_jitter_cv}")

    @property
    def changes_steps(self) -> bool:
        return (self.step_s != 0 or self.per_seq_s != 0 or self.step_scale != 1
                or self.prefill_jitter_cv != 0 or self.prefill_scale != 1
                or self.prefill_step_s != 0)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServingOverhead:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown serving overhead fields: {sorted(unknown)}")
        values: dict[str, Any] = {k: int(v) if k == "jitter_seed" else float(v)
                                  for k, v in data.items()}
        return cls(**values)


class OverheadLatencyModel:
    """A `LatencyModel` whose step takes `(base * step_scale * p + step_s + q + per_seq_s *
    num_decode_seqs) * jitter` for every step of `base` that does work (an empty step
    stays 0 s); p is `prefill_scale` and q `prefill_step_s` for a step with prompt
    tokens, else 1 and 0; jitter is 1 for pure decode steps and unless
    `prefill_jitter_cv` > 0."""

    def __init__(self, base: LatencyModel, overhead: ServingOverhead) -> None:
        self.base = base
        self.overhead = overhead
        cv = overhead.prefill_jitter_cv
        self._sigma = math.sqrt(math.log1p(cv * cv))
        self._mu = -self._sigma * self._sigma / 2  # E[factor] = 1
        self._rng = random.Random(overhead.jitter_seed)
        self.tensor_parallel = base.tensor_parallel
        self.kv_capacity_tokens = base.kv_capacity_tokens
        self.kv_bytes_per_token = base.kv_bytes_per_token
        self.num_layers = base.num_layers

    def step_s(
        self,
        num_prefill_tokens: int,
        prefill_attn_pairs: float,
        prefill_kv_tokens: int,
        num_decode_seqs: int,
        decode_ctx_tokens: int,
    ) -> float:
        seconds = self.base.step_s(
            num_prefill_tokens, prefill_attn_pairs, prefill_kv_tokens, num_decode_seqs,
            decode_ctx_tokens)
        if num_prefill_tokens == 0 and num_decode_seqs == 0:
            return seconds
        o = self.overhead
        scale = o.step_scale * (o.prefill_scale if num_prefill_tokens > 0 else 1.0)
        seconds = seconds * scale + o.step_s + o.per_seq_s * num_decode_seqs
        if num_prefill_tokens > 0:
            seconds += o.prefill_step_s
        if self._sigma > 0 and num_prefill_tokens > 0:
            seconds *= self._rng.lognormvariate(self._mu, self._sigma)
        return seconds


def with_overhead(base: LatencyModel, overhead: ServingOverhead | None) -> LatencyModel:
    """`base` itself when the overhead leaves steps as they are, else it wrapped."""
    if overhead is None or not overhead.changes_steps:
        return base
    return OverheadLatencyModel(base, overhead)


def delayed(result: SimResult, delivery_s: float) -> SimResult:
    """The same run as the client sees it when every token arrives `delivery_s` later."""
    if not math.isfinite(delivery_s) or delivery_s < 0:
        raise ValueError(f"delivery_s must be a finite number >= 0, got {delivery_s}")
    if delivery_s == 0:
        return result
    return dataclasses.replace(result, first_token_s=result.first_token_s + delivery_s,
                               finish_s=result.finish_s + delivery_s)
