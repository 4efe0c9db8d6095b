"""Pool sizing: the cheapest colocated fleet and the cheapest xPyD split meeting the SLO.

Attainment is taken to be monotone in every pool size, so each size is found by doubling
then bisection. Colocated: for each TP degree and chunked-prefill token budget, the fewest instances. Disaggregated, per
(prefill TP, decode TP): x0 = the fewest prefill instances whose TTFT alone meets the
target (a prefill-only run, every output cut to one token); then for x in x0 .. x0 + 2 the
fewest decode instances y for the joint SLO; keep the cheapest. Every candidate is one
full simulation (stopped early once it has missed too many requests to reach the target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from splitserve.planner.cost_model import Efficiency, LatencyModel, RooflineLatencyModel
from splitserve.planner.fleet import Pool, SchedulerConfig, TransferConfig
from splitserve.planner.hardware import HardwareProfile
from splitserve.planner.model_spec import ModelSpec
from splitserve.planner.profile_format import ProfileLatencyModel
from splitserve.planner.results import SimResult, Slo
from splitserve.planner.simulator import simulate
from splitserve.planner.workload import Requests

MAX_INSTANCES = 4096


@dataclass(frozen=True)
class Layout:
    """A fleet: `num_prefill == 0` means colocated (`num_decode` mixed instances)."""

    num_prefill: int
    tp_prefill: int
    num_decode: int
    tp_decode: int
    token_budget: int = 0  # colocated chunked-prefill budget; 0 = the setup's scheduler

    @property
    def colocated(self) -> bool:
        return self.num_prefill == 0

    @property
    def num_gpus(self) -> int:
        return self.num_prefill * self.tp_prefill + self.num_decode * self.tp_decode

    def label(self) -> str:
        if self.colocated:
            budget = f", budget {self.token_budget}" if self.token_budget else ""
            return f"{self.num_decode}x colocated (TP{self.tp_decode}{budget})"
        return f"{self.num_prefill}P{self.num_decode}D (TP{self.tp_prefill}/TP{self.tp_decode})"


@dataclass(frozen=True)
class PlanSetup:
    """Everything fixed during one search."""

    model: ModelSpec
    hardware: HardwareProfile
    slo: Slo
    efficiency: Efficiency = field(default_factory=Efficiency)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    kv_link: str = "network"  # "network" (pools on different nodes) or "interconnect"
    layer_overlap: bool = False
    local_prefill_max_len: int = 0
    tp_options: tuple[int, ...] = (1, 2, 4, 8)
    prefix_cache: bool = True
    # Chunked-prefill budgets tried for the colocated fleet, so the baseline is tuned too;
    # empty = only scheduler.token_budget.
    colocated_token_budgets: tuple[int, ...] = (256, 512, 1024, 2048)
    # A measured profile (`splitserve profile`, schema splitserve.profile/v1) replaces the
    # roofline; it was measured at one TP degree, so only that degree is searched.
    profile: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kv_link not in ("network", "interconnect"):
            raise ValueError(f"kv_link must be 'network' or 'interconnect', got {self.kv_link!r}")
        if not self.tp_options or any(tp < 1 for tp in self.tp_options):
            raise ValueError(f"tp_options must be positive, got {self.tp_options}")
        if any(b < 1 for b in self.colocated_token_budgets):
            raise ValueError(f"token budgets must be >= 1, got {self.colocated_token_budgets}")

    @property
    def transfer(self) -> TransferConfig:
        hw = self.hardware
        if self.kv_link == "network":
            return TransferConfig(hw.network_bw_bytes_s, hw.network_latency_s, self.layer_overlap)
        return TransferConfig(
            hw.interconnect_bw_bytes_s, hw.interconnect_latency_s, self.layer_overlap
        )

    def cost_per_hour(self, layout: Layout) -> float:
        return layout.num_gpus * self.hardware.price_per_hour


class Evaluator:
    """Simulates layouts of one setup; latency models are built once per TP degree."""

    def __init__(self, setup: PlanSetup) -> None:
        self.setup = setup
        self.num_sims = 0
        self._models = cache(self._build_model)

    def _build_model(self, tp: int) -> LatencyModel | None:
        if self.setup.profile is not None:
            model = ProfileLatencyModel(self.setup.profile)
            return model if model.tensor_parallel == tp else None
        try:
            return RooflineLatencyModel(
                self.setup.model, self.setup.hardware, tp, self.setup.efficiency
            )
        except ValueError:
            return None  # does not fit / TP does not divide the heads

    def latency_model(self, tp: int) -> LatencyModel | None:
        return self._models(tp)

    def feasible_tps(self, requests: Requests) -> list[int]:
        """TP degrees whose KV cache holds the longest request."""
        longest = int((requests.input_len + requests.output_len).max())
        return [
            tp
            for tp in self.setup.tp_options
            if (m := self.latency_model(tp)) is not None and m.kv_capacity_tokens >= longest
        ]

    def run(self, layout: Layout, requests: Requests, early_stop: bool = True) -> SimResult:
        s = self.setup
        if layout.colocated:
            model = self.latency_model(layout.tp_decode)
            assert model is not None
            pools = [Pool("mixed", layout.num_decode, model)]
        else:
            pm, dm = self.latency_model(layout.tp_prefill), self.latency_model(layout.tp_decode)
            assert pm is not None and dm is not None
            pools = [Pool("prefill", layout.num_prefill, pm), Pool("decode", layout.num_decode, dm)]
        budget = int(np.floor((1 - s.slo.attainment) * len(requests)))
        self.num_sims += 1
        scheduler = s.scheduler
        if layout.token_budget:
            scheduler = replace(scheduler, token_budget=layout.token_budget)
        return simulate(
            requests,
            pools,
            scheduler,
            s.transfer,
            0 if layout.colocated else s.local_prefill_max_len,
            s.prefix_cache,
            (s.slo, budget) if early_stop else None,
        )

    def meets(self, layout: Layout, requests: Requests) -> bool:
        return self.run(layout, requests).attainment(self.setup.slo) >= self.setup.slo.attainment


def smallest(ok: Callable[[int], bool], low: int = 1, high: int = MAX_INSTANCES) -> int | None:
    """Smallest n in [low, high] with ok(n), assuming ok is monotone; None if none."""
    n = low
    while not ok(n):
        if n >= high:
            return None
        low, n = n + 1, min(n * 2, high)
    hi = n
    while low < hi:
        mid = (low + hi) // 2
        if ok(mid):
            hi = mid
        else:
            low = mid + 1
    return hi


def best_colocated(ev: Evaluator, requests: Requests) -> Layout | None:
    best: Layout | None = None
    budgets = ev.setup.colocated_token_budgets or (0,)
    for tp in ev.feasible_tps(requests):
        for budget in budgets:

            def ok(k: int, tp: int = tp, budget: int = budget) -> bool:
                return ev.meets(Layout(0, tp, k, tp, budget), requests)

            n = smallest(ok)
            if n is not None:
                cand = Layout(0, tp, n, tp, budget)
                if best is None or cand.num_gpus < best.num_gpus:
                    best = cand
    return best


def best_disaggregated(ev: Evaluator, requests: Requests) -> Layout | None:
    tps = ev.feasible_tps(requests)
    prefill_only = replace(requests, output_len=np.ones_like(requests.output_len))
    # A one-token output never reaches the decode pool; no prompt is prefilled there either.
    pev = Evaluator(replace(ev.setup, local_prefill_max_len=0))
    x0: dict[int, int] = {}
    for tp in tps:

        def prefill_ok(k: int, tp: int = tp) -> bool:
            return pev.meets(Layout(k, tp, 1, tp), prefill_only)

        n = smallest(prefill_ok)
        if n is not None:
            x0[tp] = n
    ev.num_sims += pev.num_sims
    best: Layout | None = None
    # The two cheapest prefill TP degrees are enough: the rest only add GPUs.
    for tp_p in sorted(x0, key=lambda t: (x0[t] * t, t))[:2]:
        for tp_d in tps:
            for x in range(x0[tp_p], x0[tp_p] + 3):

                def joint_ok(k: int, x: int = x, tp_p: int = tp_p, tp_d: int = tp_d) -> bool:
                    return ev.meets(Layout(x, tp_p, k, tp_d), requests)

                y = smallest(joint_ok)
                if y is None:
                    continue
                cand = Layout(x, tp_p, y, tp_d)
                if best is None or cand.num_gpus < best.num_gpus:
                    best = cand
    return best


def max_goodput(ev: Evaluator, layout: Layout, requests: Requests, rel_tol: float = 0.02) -> float:
    """Highest arrival rate (req/s) at which `layout` still meets the SLO target."""

    def ok(rate: float) -> bool:
        return ev.meets(layout, requests.with_rate(rate))

    low, high = 0.0, max(requests.rate, 1e-3)
    while ok(high):
        low, high = high, high * 2
        if high > 1e7:
            return low
    while high - low > rel_tol * high:
        mid = (low + high) / 2
        if ok(mid):
            low = mid
        else:
            high = mid
    return low
