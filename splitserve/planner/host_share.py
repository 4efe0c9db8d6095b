"""The serving front end's CPU on the cores the instances compute on (`HostShare`).

In a real fleet the router and the clients run elsewhere and cost the accelerators
nothing. On one small host (the calibration's two cores: one per worker) they share the
workers' cores, and their work follows the token stream: the router relays every output
token and the client reads it. A worker's step then takes longer in proportion to how
fast tokens flow at that moment, which a fixed price factor cannot show: measured here,
a lone prompt step took 1.4x its profiled price at under 100 output tokens per second
and 1.8x at over 400 (docs/planner.md, "Eleventh measurement"). The simulator stretches
every step by the share of a core the front end takes at the current token rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_SHARE = 0.9  # the front end never takes all of a core: a worker still progresses


@dataclass(frozen=True)
class HostShare:
    """cpu_per_token_s: front-end CPU seconds per output token (router and clients);
    num_cores: the cores the instances and the front end share; window_s: the token
    rate is an exponentially weighted average over about this many seconds."""

    cpu_per_token_s: float
    num_cores: int
    window_s: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.cpu_per_token_s < math.inf):
            raise ValueError(f"cpu_per_token_s must be finite and >= 0, got "
                             f"{self.cpu_per_token_s}")
        if self.num_cores < 1:
            raise ValueError(f"num_cores must be >= 1, got {self.num_cores}")
        if not (0 < self.window_s < math.inf):
            raise ValueError(f"window_s must be finite and > 0, got {self.window_s}")

    def stretch(self, tokens_per_s: float) -> float:
        """How much longer a step takes while tokens flow at `tokens_per_s`: the front
        end's work spread over the shared cores takes that share of each."""
        share = min(self.cpu_per_token_s * tokens_per_s / self.num_cores, MAX_SHARE)
        return 1.0 / (1.0 - share)


class TokenRate:
    """Output tokens per second, exponentially averaged over the host's `window_s`, and
    the stretch it gives a step (O(1) per update: the simulator calls it once per
    step). `now_s`: the simulation's clock as of the step being priced."""

    def __init__(self, host: HostShare) -> None:
        self.host = host
        self.rate = 0.0
        self.at_s = 0.0
        self.now_s = 0.0

    def stretch_at(self, now: float) -> float:
        return self.host.stretch(self.at(now))

    def add(self, now: float, num_tokens: int) -> None:
        self.rate = self.at(now) + num_tokens / self.host.window_s
        self.at_s = now

    def at(self, now: float) -> float:
        return self.rate * math.exp(-(now - self.at_s) / self.host.window_s)


class StretchedModel:
    """A latency model whose every step takes `rate.stretch_at(rate.now_s)` times the
    base model's; every other attribute is the base model's."""

    def __init__(self, base: Any, rate: TokenRate) -> None:
        self.base = base
        self.rate = rate

    def step_s(self, num_prefill_tokens: int, prefill_attn_pairs: float,
               prefill_kv_tokens: int, num_decode_seqs: int, decode_ctx_tokens: int) -> float:
        return self.base.step_s(num_prefill_tokens, prefill_attn_pairs, prefill_kv_tokens,
                                num_decode_seqs, decode_ctx_tokens) * self.rate.stretch_at(
                                    self.rate.now_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)
